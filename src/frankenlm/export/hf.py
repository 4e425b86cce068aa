"""`export_hf`: the materialized frankenmodel as a plain Hugging Face directory (safetensors + tokenizer).

The directory loads with plain ``AutoModelForCausalLM.from_pretrained(out_dir)``. It is written into a
temporary sibling directory and moved into place when complete (see `frankenlm.export.files`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from frankenlm import __version__
from frankenlm.export import files
from frankenlm.export.materialize import materialize, unwrap_sources
from frankenlm.export.scaling import is_scaled
from frankenlm.model.plan import LayerPlan, coerce_plan


def weights_digest(out: Path) -> str:
    """SHA-256 over the directory's ``*.safetensors`` files (names and bytes, in name order)."""
    h = hashlib.sha256()
    for f in sorted(out.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 24):
                h.update(block)
    return h.hexdigest()


def export_hf(
    sources,
    plan: LayerPlan | str,
    out_dir: str | os.PathLike,
    tokenizer=None,
    head_source: str | None = None,
    force: bool = False,
) -> Path:
    """Save the materialized frankenmodel (safetensors), its tokenizer and ``frankenlm.json`` to `out_dir`.

    `tokenizer` may be None (then none is saved). An existing non-empty `out_dir` is refused unless `force`;
    with `force` the export's files replace same-named ones and files of an earlier frankenlm export that this
    one does not write are removed, nothing else (foreign weight files are refused). ``frankenlm.json`` records
    the plan, head source, each source's name (zoo name / hub id), path, digest and depth, the files written,
    and a SHA-256 of the weights (``sha256``, which `frankenlm.model.loading` uses as the directory's digest).
    """
    out = files.check_dir_target(out_dir, force)
    plan = coerce_plan(plan)
    _, info = unwrap_sources(sources)
    model = materialize(sources, plan, head_source)
    with files.atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        written = sorted(f.name for f in tmp.iterdir()) + [files.MARKER]
        note = {
            "frankenlm_version": __version__,
            "format": "hf",
            "plan": plan.text(),
            "depth": len(plan),
            "scaled": any(is_scaled(r) for r in plan),
            "head_source": head_source,
            "sources": {("default" if a is None else a): v for a, v in info.items()},
            "files": sorted(set(written)),
            "sha256": weights_digest(tmp),
        }
        (tmp / files.MARKER).write_text(json.dumps(note, indent=1) + "\n")
    return out
