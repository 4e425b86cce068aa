"""`export_gguf`: the frankenmodel of a plan as a GGUF, copying the sources' tensor bytes without requantizing.

All metadata of the head source is copied (tokenizer included), ``{arch}.block_count`` set to the new depth,
per-layer metadata arrays remapped, and each position's ``blk.{layer}.*`` tensors written as ``blk.{pos}.*``
with their original (quantized) bytes. Keys under ``frankenlm.`` are frankenlm's own and replaced, not copied
(``frankenlm.plan``, ``frankenlm.sources``, ``frankenlm.scaled``), so re-exporting an exported GGUF works.

Sublayer positions get an F32 zero ``ffn_down`` (attn-only) or ``attn_output`` (mlp-only). Scaled positions
(`LayerRef` scales) get the tensors named in `frankenlm.export.scaling` dequantized, multiplied and written as
F32 (GGUF Gemma norms store ``1 + w``, so they are multiplied directly); ``frankenlm.scaled`` (JSON) lists each
rewritten tensor with its factor. Every other tensor keeps its bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from frankenlm.errors import FrankenError
from frankenlm.export import files, scaling
from frankenlm.model.arch import arch_of, gemma3_gguf_layer_type
from frankenlm.model.frankenmodel import as_sources
from frankenlm.model.plan import LayerPlan, coerce_plan

GGUF_ARCHS = ("llama", "qwen2", "gemma3")
_GGUF_HINT = "export with format hf (export_hf) and convert that directory with llama.cpp's convert_hf_to_gguf.py"


def gguf_zeroed(arch: str, sublayer: str) -> str:
    """The GGUF block tensor prefix zeroed for an `sublayer`-only position (the registry's)."""
    return arch_of(arch).zeroed[sublayer][1]


__all__ = ["export_gguf", "gemma3_gguf_layer_type", "gguf_zeroed"]


def _gguf_source(alias, src) -> Path:
    from frankenlm.model import zoo

    if isinstance(src, str) and src in zoo.ZOO:
        return zoo.gguf_path(src)
    p = Path(src).expanduser()
    who = "default source" if alias is None else f"source {alias!r}"
    if not p.is_file():
        kind = "a directory (a Hugging Face model?)" if p.is_dir() else "not an existing file"
        raise FrankenError(f"GGUF export needs a GGUF file for the {who}, and {str(p)!r} is {kind}: {_GGUF_HINT}")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise FrankenError(
            f"GGUF export needs a GGUF file for the {who}, and {str(p)!r} is not one (first bytes {magic!r}): "
            f"{_GGUF_HINT}"
        )
    return p


def _is_zoo_name(src) -> bool:
    from frankenlm.model import zoo

    return isinstance(src, str) and src in zoo.ZOO


def _field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def export_gguf(
    source_gguf_paths: Mapping[str | None, str | os.PathLike] | str | os.PathLike,
    plan: LayerPlan | str,
    out_path: str | os.PathLike,
    head_source: str | None = None,
    force: bool = False,
) -> Path:
    """Write the frankenmodel of `plan` as a GGUF, copying the sources' tensor bytes without requantizing.

    `source_gguf_paths` maps alias → GGUF path (or zoo name); a single path means the default source. Metadata
    (tokenizer included) and non-block tensors come from `head_source`; ``{arch}.block_count`` becomes
    ``len(plan)``; sublayer positions get an F32 zero ``ffn_down`` (attn-only) or ``attn_output`` (mlp-only);
    scaled positions get their scaled tensors as F32. An existing `out_path` is replaced only with `force`;
    everything is checked before the file is written (atomically: temp file + rename).
    """
    import gguf

    plan = coerce_plan(plan)
    out = files.check_file_target(out_path, force, "GGUF output", "frankenmodel.gguf")
    paths = as_sources(source_gguf_paths, head_source, "multi-source GGUF exports")
    files_ = {a: _gguf_source(a, p) for a, p in paths.items()}
    # what frankenlm.sources records: the zoo name where one was given, else the file name
    names = {a: (p if _is_zoo_name(p) else files_[a].name) for a, p in paths.items()}
    readers = {}
    for a, p in files_.items():
        try:
            readers[a] = gguf.GGUFReader(p, "r")
        except Exception as e:
            raise FrankenError(
                f"cannot read GGUF {str(p)!r} (truncated or corrupt?): {type(e).__name__}: {e}"
            ) from None
    head = readers[head_source]
    arch = _field(head, "general.architecture")
    if arch not in GGUF_ARCHS:
        raise FrankenError(
            f"GGUF {str(files_[head_source])!r} has architecture {arch!r}: GGUF export supports {', '.join(GGUF_ARCHS)}"
        )
    depths = {}
    for a, r in readers.items():
        who = f"GGUF {str(files_[a])!r}"
        if _field(r, "general.architecture") != arch:
            raise FrankenError(
                f"{who} has architecture {_field(r, 'general.architecture')!r} but the head source has {arch!r}: "
                "multi-source stacks need one architecture"
            )
        if _field(r, f"{arch}.embedding_length") != _field(head, f"{arch}.embedding_length"):
            raise FrankenError(
                f"{who} has embedding_length {_field(r, f'{arch}.embedding_length')} but the head source has "
                f"{_field(head, f'{arch}.embedding_length')}: multi-source stacks need one hidden size"
            )
        n_split = _field(r, "split.count")
        if n_split is not None and int(n_split) > 1:
            raise FrankenError(
                f"{who} is one shard of a {n_split}-file split GGUF: merge it first (llama-gguf-split --merge)"
            )
        if r.endianess != head.endianess:
            raise FrankenError(f"{who} has a different byte order from the head source")
        depths[a] = int(_field(r, f"{arch}.block_count"))
    plan.validate(depths)
    n_head = depths[head_source]

    if arch == "gemma3":
        if len(plan) != n_head and n_head == 62:
            raise FrankenError(
                f"gemma3 GGUF with 62 layers (27B): llama.cpp chooses its attention scale from the layer count, so a "
                f"{len(plan)}-layer GGUF would run with another scale: export hf instead"
            )
        for pos, r in enumerate(plan):
            was, now = gemma3_gguf_layer_type(r.layer), gemma3_gguf_layer_type(pos)
            if was != now:
                raise FrankenError(
                    f"plan {plan.text()!r} cannot be a gemma3 GGUF: position {pos} runs layer {r.layer}, a {was} "
                    "layer, "
                    f"but GGUF has no per-layer attention types and llama.cpp/transformers make every 6th layer "
                    f"(index % 6 == 5) full attention, so it would run as {now}: keep full-attention layers at "
                    "positions 5, 11, 17, ... (e.g. repeat aligned blocks of 6), or export hf (config.json keeps "
                    "layer_types)"
                )

    # block tensors: name suffix → tensor, per (alias, layer)
    blocks: dict[tuple, dict[str, object]] = {}
    for a, r in readers.items():
        for t in r.tensors:
            if t.name.startswith("blk."):
                _, bid, suffix = t.name.split(".", 2)
                blocks.setdefault((a, int(bid)), {})[suffix] = t
    ref_block = blocks.get((head_source, 0), {})
    for pos, ref in enumerate(plan):
        blk = blocks.get((ref.source, ref.layer))
        who = f"position {pos} (layer {ref.layer} of source {ref.source or 'default'!r})"
        if not blk:
            raise FrankenError(f"{who}: GGUF {str(files_[ref.source])!r} has no blk.{ref.layer}.* tensors")
        for suffix, t in blk.items():
            rt = ref_block.get(suffix)
            if rt is None or list(rt.shape) != list(t.shape):
                theirs = "has no such tensor" if rt is None else f"is {list(rt.shape)}"
                raise FrankenError(
                    f"{who}: tensor {suffix!r} has shape {list(t.shape)} but the head source's {theirs}: "
                    "sources must share architecture and sizes"
                )
        if ref.sublayer != "block" and not any(s.startswith(gguf_zeroed(arch, ref.sublayer)) for s in blk):
            raise FrankenError(
                f"{who}: no {gguf_zeroed(arch, ref.sublayer).rstrip('.')} tensor to zero for a {ref.sublayer}-only position"
            )

    facts = scaling.facts(arch) if any(scaling.is_scaled(r) for r in plan) else None
    scaled: dict[str, float] = {}  # new tensor name → factor
    if facts is not None:
        for pos, ref in enumerate(plan):
            blk = blocks[(ref.source, ref.layer)]
            for branch, sc in scaling.ref_scales(ref).items():
                if sc != 1.0 and not any(x in blk for x in scaling.site(facts, branch).gguf):
                    raise FrankenError(
                        f"position {pos} (layer {ref.layer}) scales its {branch} branch by {sc:g}, but GGUF "
                        f"{str(files_[ref.source])!r} has no blk.{ref.layer}.{scaling.gguf_stem(facts, branch)} "
                        "tensor to carry it"
                    )
            for suffix in blk:
                zeroed = ref.sublayer != "block" and suffix.startswith(gguf_zeroed(arch, ref.sublayer))
                f = scaling.gguf_scale_for(facts, ref, suffix)
                if f is not None and not zeroed:
                    scaled[f"blk.{pos}.{suffix}"] = f

    with files.atomic_file(out) as tmp:
        _write(gguf, tmp, head, readers, depths, blocks, plan, arch, files_, names, scaled)
    return out


def _write(gguf, tmp, head, readers, depths, blocks, plan, arch, files_, names, scaled) -> None:
    n_head = int(_field(head, f"{arch}.block_count"))
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=head.endianess)
    alignment = _field(head, "general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment)

    # metadata: everything from the head source; per-layer arrays remapped; the new depth
    for field in head.fields.values():
        if field.name == "general.architecture" or field.name.startswith(("GGUF.", "frankenlm.")):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = field.contents()
        if field.name == f"{arch}.block_count":
            val = len(plan)
        elif sub is not None and field.name.startswith(f"{arch}.") and len(val) == n_head:
            per_src = {a: _field(r, field.name) for a, r in readers.items()}
            if any(v is None or len(v) != depths[a] for a, v in per_src.items()):
                raise FrankenError(f"sources disagree on the per-layer metadata {field.name!r}")
            val = [per_src[r.source][r.layer] for r in plan]
        writer.add_key_value(field.name, val, vtype, sub_type=sub)
    writer.add_key_value("frankenlm.plan", plan.text(), gguf.GGUFValueType.STRING)
    writer.add_key_value(
        "frankenlm.sources",
        json.dumps({("default" if a is None else a): names[a] for a in files_}),
        gguf.GGUFValueType.STRING,
    )
    if scaled:
        writer.add_key_value("frankenlm.scaled", json.dumps(scaled), gguf.GGUFValueType.STRING)

    def add_raw(name, t):
        # the reader's bytes as they are: quantized types come as uint8 arrays of their byte shape, which
        # add_tensor turns back into the element shape for raw_dtype (as gguf's gguf_new_metadata.py copies)
        writer.add_tensor(
            name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type, tensor_endianess=head.endianess
        )

    non_block = [t for t in head.tensors if not t.name.startswith("blk.")]
    first_blk = next((i for i, t in enumerate(head.tensors) if t.name.startswith("blk.")), len(head.tensors))
    before = [t for t in head.tensors[:first_blk] if not t.name.startswith("blk.")]
    for t in before:
        add_raw(t.name, t)
    for pos, ref in enumerate(plan):
        for suffix, t in blocks[(ref.source, ref.layer)].items():
            name = f"blk.{pos}.{suffix}"
            if ref.sublayer != "block" and suffix.startswith(gguf_zeroed(arch, ref.sublayer)):
                writer.add_tensor(name, np.zeros(tuple(reversed([int(d) for d in t.shape])), dtype=np.float32))
            elif name in scaled:
                writer.add_tensor(name, _dequantized(gguf, t) * np.float32(scaled[name]))
            else:
                add_raw(name, t)
    for t in non_block[len(before) :]:
        add_raw(t.name, t)

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _dequantized(gguf, t) -> np.ndarray:
    """A reader tensor's values as float32, in numpy (reversed GGUF) dimension order."""
    shape = tuple(reversed([int(d) for d in t.shape]))
    if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        a = np.asarray(t.data, dtype=np.float32)
    else:
        a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
    return np.ascontiguousarray(a.reshape(shape))
