"""Which models an export reads: the sources a mergekit YAML names, merged with those given explicitly.

A mergekit YAML plan names its models (``model:``), so re-exporting one keeps them: `merge_sources` uses the
YAML's model for every alias the caller did not give, and refuses an explicit model that is a different model
from the one the YAML names (the same model spelled differently — a zoo name and its safetensors cache
directory — agrees).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.model.zoo import DEFAULT_MODEL


def _where(source: str) -> Path | None:
    """The HF directory a model source loads from (None for a hub id, which is compared by name)."""
    from frankenlm.model.loading import resolve

    p = Path(source).expanduser()
    if "/" in source and not p.exists() and not source.endswith(".gguf"):
        return None
    return Path(resolve(source)[1]).resolve()


def same_model(a: str, b: str) -> bool:
    """Whether two model sources name the same model (same string, or the same directory once resolved)."""
    if a == b:
        return True
    wa, wb = _where(a), _where(b)
    return wa is not None and wa == wb


def merge_sources(
    yaml_file: str | None,
    yaml_models: Mapping[str | None, str],
    model: str | None,
    extra: Mapping[str, str],
) -> dict[str | None, str]:
    """alias → model source for an export: explicit `model` / `extra` sources, else the YAML's, else the
    default zoo model. An explicit source that disagrees with the YAML is refused (one line)."""
    given: dict[str | None, str | None] = {None: model, **extra}
    out: dict[str | None, str] = {}
    for alias, ym in yaml_models.items():
        mine = given.get(alias)
        opt = "--model" if alias is None else f"--source {alias}=..."
        if mine is None:
            try:
                _where(ym)
            except FrankenError as e:
                raise FrankenError(
                    f"mergekit plan {yaml_file!r} names model {ym!r}, which cannot be used: {e}"
                ) from None
            out[alias] = ym
        elif same_model(mine, ym):
            out[alias] = mine
        else:
            raise FrankenError(
                f"{opt} {mine!r} is not the model {ym!r} that mergekit plan {yaml_file!r} names for "
                f"{'the default source' if alias is None else f'source {alias!r}'}: drop {opt.split()[0]} to use "
                "the YAML's model, or edit the YAML"
            )
    for alias, src in given.items():
        if src is not None:
            out.setdefault(alias, src)
    out.setdefault(None, DEFAULT_MODEL)
    return {None: out[None], **{a: s for a, s in out.items() if a is not None}}


def gguf_source(source: str) -> str | Path:
    """The GGUF a model source comes from: a zoo name (kept, so the export records it) or a ``.gguf`` path; a
    frankenlm safetensors cache directory maps back to its zoo model or GGUF file. Anything else is returned
    unchanged (export_gguf refuses it with a hint)."""
    from frankenlm.export.materialize import zoo_name_of

    p = Path(source).expanduser()
    if p.is_dir():
        name = zoo_name_of(p)
        if name:
            return name
        try:
            origin = json.loads((p / "frankenlm.json").read_text()).get("source")
        except (OSError, ValueError, AttributeError):
            origin = None
        if origin and str(origin).endswith(".gguf") and Path(origin).is_file():
            return Path(origin)
    return source
