"""The configurations of a study that help on held-out items, shown the way a user would use them: exported,
reloaded, generating.

For every configuration a study confirms (Holm-significant on search items, held-out CI above 0) and every one
whose held-out gain alone is significant (`ResultRow.heldout_better`), `showcase` loads its model in fp32 and
- exports the frankenmodel as a materialized Hugging Face directory and as a GGUF (`frankenlm.export`), loads
  each back with transformers' own `from_pretrained` (the GGUF through its GGUF loader; nothing is cached), and
  records the largest logit difference from the zero-copy frankenmodel on the prompts and whether greedy
  generation gives the same text;
- generates greedily from the first held-out items of the task the configuration won on (a rolling text's first
  sentences; a benchmark item's question), base and frankenmodel side by side.

The result is one JSON file (`SHOWCASE`) beside the committed results, which `frankenlm findings` renders:
the document stays a function of committed files, and only this step loads a model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from frankenlm.errors import FrankenError
from frankenlm.eval.tasks.requests import GenerateRequest, LoglikelihoodRequest, RollingRequest
from frankenlm.study.results import read_results
from frankenlm.study.spec import StudySpec

SHOWCASE = "showcase.json"
PROMPTS = 3  # held-out items per configuration
NEW_TOKENS = 40
PROMPT_CHARS = 240  # a rolling text's prompt: its first characters, cut at a word boundary


def prompt_of(doc) -> str:
    """What a user would type from this item: a text's opening (rolling tasks) or the question (benchmarks)."""
    r = doc.requests[0]
    if isinstance(r, RollingRequest):
        text = r.text.strip()
        if len(text) <= PROMPT_CHARS:
            return text
        cut = text[:PROMPT_CHARS]
        return cut[: cut.rfind(" ")] if " " in cut else cut
    if isinstance(r, (LoglikelihoodRequest, GenerateRequest)):
        return r.context
    raise TypeError(f"no prompt for a {type(r).__name__}")


def showcased(run_dirs: list[Path]) -> list[tuple[Path, str, str, str]]:
    """(run directory, model, task, configuration) of every configuration to show: the confirmed ones, then
    those significant on held-out items alone, in document order."""
    out = []
    for d in run_dirs:
        rows = [(g, r) for g in read_results(Path(d)).groups() for r in g.rows]
        out += [(Path(d), g.model, g.task, r.config) for g, r in rows if r.confirmed]
        out += [(Path(d), g.model, g.task, r.config) for g, r in rows if r.heldout_better and not r.confirmed]
    return out


@torch.inference_mode()
def _logits(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    return [model(input_ids=tokenizer(p, return_tensors="pt").input_ids).logits[0].float() for p in prompts]


def _check_export(path: Path, reference: list[torch.Tensor], prompts: list[str], generations: list[str]) -> dict:
    """How an export, loaded by transformers itself (`from_pretrained`; a GGUF through its GGUF loader, nothing
    cached), compares with the zero-copy frankenmodel on the prompts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from frankenlm.model.generation import greedy_generate

    where = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    folder = str(path.parent if where else path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **where).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, **where)
    got = _logits(model, tokenizer, prompts)
    diff = max(float((a - b).abs().max()) for a, b in zip(got, reference, strict=True))
    gens = [greedy_generate(model, tokenizer, p, max_new_tokens=NEW_TOKENS) for p in prompts]
    return {"max_abs_logit_diff": diff, "same_generations": gens == generations, "bytes": _bytes(path)}


def _bytes(path: Path) -> int:
    """The weights' size: a GGUF file, or the safetensors files of a directory."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.glob("*.safetensors"))


def showcase_entry(run_dir: Path, model: str, task: str, config: str, workdir: Path) -> dict:
    """The exports and generations of one configuration (see the module docstring)."""
    from frankenlm.export import export_gguf, export_hf
    from frankenlm.export.sources import gguf_source
    from frankenlm.model.frankenmodel import build_frankenmodel
    from frankenlm.model.generation import greedy_generate
    from frankenlm.model.loading import load_model
    from frankenlm.model.plan import coerce_plan
    from frankenlm.study.items import select_items

    spec = StudySpec.from_json((run_dir / "spec.json").read_text(), source=str(run_dir / "spec.json"))
    budget = next(t for t in spec.tasks if t.name == task)
    base = load_model(model, dtype="float32")
    plan = coerce_plan(config)
    plan.validate({None: base.depth})
    docs = select_items(budget, base.tokenizer, spec.slices, spec.seed).heldout[:PROMPTS]
    prompts = [prompt_of(d) for d in docs]
    fm = build_frankenmodel(base.model, plan)
    gen_base = [greedy_generate(base.model, base.tokenizer, p, max_new_tokens=NEW_TOKENS) for p in prompts]
    gen_fm = [greedy_generate(fm, base.tokenizer, p, max_new_tokens=NEW_TOKENS) for p in prompts]
    reference = _logits(fm, base.tokenizer, prompts)
    exports = {}
    hf_dir = workdir / "hf"
    export_hf({None: base}, plan, hf_dir, base.tokenizer)
    exports["hf"] = _check_export(hf_dir, reference, prompts, gen_fm)
    gguf_file = workdir / "frankenmodel.gguf"
    try:
        export_gguf({None: gguf_source(model)}, plan, gguf_file)
    except FrankenError as e:  # a source that is not a GGUF (a Hugging Face directory) has no GGUF export
        exports["gguf"] = {"skipped": str(e)}
    else:
        exports["gguf"] = _check_export(gguf_file, reference, prompts, gen_fm)
    return {
        "model": model,
        "task": task,
        "config": config,
        "dtype": "float32",
        "max_new_tokens": NEW_TOKENS,
        "exports": exports,
        "generations": [
            {"item_id": d.item_id, "prompt": p, "base": b, "frankenmodel": f}
            for d, p, b, f in zip(docs, prompts, gen_base, gen_fm, strict=True)
        ],
    }


def write_showcase(run_dirs: list[Path], out: Path, notify: Callable[[str], None] = print, redo: bool = False) -> Path:
    """Showcase every configuration of `run_dirs` that `showcased` names into `out` (JSON); returns `out`.
    Entries `out` already holds for configurations still named are kept (an entry depends only on the model, the
    plan and the task's held-out items), unless `redo`; entries of configurations no longer named are dropped."""
    kept = {} if redo else {(e["model"], e["task"], e["config"]): e for e in _entries(Path(out))}
    entries = []
    for run_dir, model, task, config in showcased(run_dirs):
        if (model, task, config) in kept:
            notify(f"showcase: {model} · {task} · {config} (kept from {out})")
            entries.append(kept[(model, task, config)])
            continue
        notify(f"showcase: {model} · {task} · {config} (export hf + gguf, reload, generate)")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="frankenlm-showcase-") as tmp:
            entry = showcase_entry(run_dir, model, task, config, Path(tmp))
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entries.append(entry)
    from frankenlm.export.files import atomic_file

    with atomic_file(Path(out)) as tmp:
        tmp.write_text(json.dumps({"entries": entries}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(out)


def _entries(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8")).get("entries", []) if path.is_file() else []


def read_showcase(folders: list[Path]) -> list[dict]:
    """The showcase entries saved in any of `folders` (none where no folder has one)."""
    return [e for f in folders for e in _entries(Path(f) / SHOWCASE)]
