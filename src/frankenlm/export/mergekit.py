"""`export_mergekit`: a plan as a mergekit ``passthrough`` YAML file that mergekit can merge as written.

Every model is named as mergekit can read it offline: a zoo name or a ``.gguf`` file becomes frankenlm's
converted safetensors cache directory (config, weights and tokenizer files), a local directory its absolute
path; only a hub id stays an id. The plan is checked against each model's depth before anything is written.
The YAML itself (scales as ``scale`` filters, what has no equivalent) is `frankenlm.model.mergekit`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.export import files
from frankenlm.model.mergekit import DTYPES, from_mergekit, read_mergekit, to_mergekit
from frankenlm.model.plan import LayerPlan, coerce_plan

__all__ = ["DTYPES", "export_mergekit", "from_mergekit", "mergekit_model", "read_mergekit", "to_mergekit"]


def _config_of(path: Path):
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except Exception as e:
        raise FrankenError(f"cannot read the model config in {str(path)!r}: {type(e).__name__}: {e}") from None
    return getattr(cfg, "text_config", None) or cfg


def mergekit_model(source: str) -> tuple[str, object]:
    """(the name mergekit should read, the model's config) for a frankenlm model source.

    Zoo names and ``.gguf`` files become frankenlm's safetensors cache directory (converted on first use; it
    holds the tokenizer files), local directories their absolute path, hub ids stay ids.
    """
    from frankenlm.model.loading import resolve

    _, path, _ = resolve(str(source))
    p = Path(str(source)).expanduser()
    is_hub_id = "/" in str(source) and not p.exists() and not str(source).endswith(".gguf")
    cfg = _config_of(path)
    return (str(source) if is_hub_id else str(Path(path).resolve())), cfg


def export_mergekit(
    plan: LayerPlan | str,
    models: Mapping[str | None, str] | str,
    out_path: str | os.PathLike,
    dtype: str = "bfloat16",
    force: bool = False,
) -> Path:
    """Write the mergekit ``passthrough`` YAML of a whole-layer plan (`models`: alias → frankenlm model source:
    zoo name, ``.gguf`` file, HF directory or hub id), mergeable as written (see the module docstring).

    The plan is checked against every model's depth, and the output path (a file; an existing one only with
    `force`) before anything is written; the file is written atomically.
    """
    plan = coerce_plan(plan)
    if isinstance(models, (str, os.PathLike)):
        models = {None: str(models)}
    if dtype not in DTYPES:
        raise FrankenError(f"unknown dtype {dtype!r} for a mergekit export: use one of {', '.join(DTYPES)}")
    out = files.check_file_target(out_path, force, "mergekit output", "frankenmodel.yaml")
    if plan.has_sublayers:  # refuse before resolving (converting) any model
        to_mergekit(plan, {a: "" for a in plan.sources}, dtype)
    missing = [a for a in plan.sources if a not in models]
    if missing:
        raise FrankenError(f"plan names source {missing[0]!r}, which was not given (give it as --source ALIAS=MODEL)")
    names, depths, types = {}, {}, set()
    for alias in plan.sources:
        names[alias], cfg = mergekit_model(models[alias])
        depths[alias] = int(cfg.num_hidden_layers)
        types.add(cfg.model_type)
    plan.validate(depths)
    if len(types) > 1:
        raise FrankenError(f"sources have different architectures ({', '.join(sorted(types))}): one is needed")
    text = to_mergekit(plan, names, dtype=dtype, model_type=types.pop())
    with files.atomic_file(out) as tmp:
        tmp.write_text(text)
    return out
