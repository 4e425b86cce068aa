"""Exports of a frankenmodel: a plain Hugging Face directory, a mergekit passthrough YAML, or a GGUF file.

* `materialize` turns a plan into an ordinary transformers model whose weights are physical copies (so that
  safetensors can store them); `export_hf` saves it with the tokenizer and a ``frankenlm.json`` provenance note.
* `export_mergekit` writes the equivalent mergekit ``passthrough`` config (whole-layer plans only).
* `export_gguf` rewrites a GGUF source: all metadata is copied, ``{arch}.block_count`` set to the new depth and
  each position's ``blk.{layer}.*`` tensors are written as ``blk.{pos}.*`` with their original (quantized)
  bytes, so nothing is requantized.

Sublayer positions are materialized as the whole layer with the other branch's output projection zeroed: an
``attn`` position gets MLP ``down_proj`` (GGUF ``ffn_down``) = 0, an ``mlp`` position gets attention ``o_proj``
(GGUF ``attn_output``) = 0, biases included. That is exactly the zero-copy frankenmodel's ZeroMLP/ZeroAttention:
the branch adds 0 to the residual stream in llama and qwen2 (no o_proj/down_proj bias) and in gemma3 (its
post-attention and post-feedforward RMSNorms map 0 to 0).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from frankenlm import __version__
from frankenlm.errors import FrankenError
from frankenlm.model.frankenmodel import as_sources, ATTN_ATTR, MLP_ATTR, _named_tensors, decoder_layers, prepare_sources
from frankenlm.model.plan import LayerPlan, coerce_plan, to_mergekit

# the output projection zeroed (HF module path inside a decoder layer, GGUF tensor name inside a block)
_HF_ZEROED = {"attn": f"{MLP_ATTR}.down_proj.", "mlp": f"{ATTN_ATTR}.o_proj."}
_GGUF_ZEROED = {"attn": "ffn_down.", "mlp": "attn_output."}
GGUF_ARCHS = ("llama", "qwen2", "gemma3")
_GGUF_HINT = "export with format hf (export_hf) and convert that directory with llama.cpp's convert_hf_to_gguf.py"


# ------------------------------------------------------------------------------------------------ sources


def _unwrap(sources) -> tuple[dict[str | None, nn.Module], dict[str | None, dict]]:
    """alias → model and alias → provenance, from a model, a LoadedModel, or a mapping of either."""
    items = dict(sources) if isinstance(sources, Mapping) else {None: sources}
    models: dict[str | None, nn.Module] = {}
    info: dict[str | None, dict] = {}
    for alias, s in items.items():
        model = getattr(s, "model", None) if not isinstance(s, nn.Module) else s
        if not isinstance(model, nn.Module):
            raise FrankenError(
                f"source {alias or 'default'!r} is a {type(s).__name__}: give a transformers model or a LoadedModel"
            )
        models[alias] = model
        name = getattr(s, "name", None) or getattr(model.config, "_name_or_path", None) or None
        digest = getattr(s, "digest", None) or None
        if digest is None and name:  # a bare model loaded from frankenlm's cache or an export: its marker's digest
            try:
                digest = json.loads((Path(name) / "frankenlm.json").read_text()).get("sha256")
            except (OSError, ValueError):
                pass
        info[alias] = {"name": name, "digest": digest, "layers": int(model.config.num_hidden_layers)}
    return models, info


# ------------------------------------------------------------------------------------------------- HF


def materialize(sources, plan: LayerPlan | str, head_source: str | None = None) -> nn.Module:
    """A plain transformers model equivalent to the frankenmodel of `plan`, with its own copy of every weight.

    `sources` is a model (or LoadedModel) or a mapping alias → model as for `build_frankenmodel`. The model has
    the head source's class and config with ``num_hidden_layers = len(plan)`` and ``layer_types`` remapped;
    sublayer positions are whole layers with ``down_proj`` (attn-only) or ``o_proj`` (mlp-only) zeroed.
    """
    models, _ = _unwrap(sources)
    plan, srcs, cfg = prepare_sources(models, plan, head_source)
    head = srcs[head_source]
    if hasattr(cfg, "quantization_config"):  # a GGUF-loaded head: the copy holds plain dequantized weights
        del cfg.quantization_config
    with torch.device("meta"):
        m = type(head)._from_config(cfg, dtype=head.dtype)

    head_tensors = {n: t for n, t, _ in _named_tensors(head)}
    layer_tensors = {}  # (alias, layer) → name → tensor
    copies: dict[tuple, torch.Tensor] = {}  # (scope, id(source tensor)) → its copy: keeps tied weights tied

    for r in plan:
        if r.sublayer != "block":
            layer = decoder_layers(srcs[r.source])[r.layer]
            prefix = _HF_ZEROED[r.sublayer]
            if not any(n.startswith(prefix) for n, _ in layer.named_parameters()):
                raise FrankenError(
                    f"cannot materialize the {r.sublayer}-only position of layer {r.layer}: "
                    f"{type(layer).__name__} has no {prefix.rstrip('.')} projection to zero"
                )

    for name, t, slot in list(_named_tensors(m)):
        if name.startswith("model.layers."):
            pos_s, _, rest = name[len("model.layers.") :].partition(".")
            pos = int(pos_s)
            r = plan[pos]
            key = (r.source, r.layer)
            if key not in layer_tensors:
                layer_tensors[key] = {n: x for n, x, _ in _named_tensors(decoder_layers(srcs[r.source])[r.layer])}
            src = layer_tensors[key].get(rest)
            zero = r.sublayer != "block" and rest.startswith(_HF_ZEROED[r.sublayer])
            scope: object = pos
            what = f"position {pos} (layer {r.layer} of source {r.source or 'default'!r}): {rest!r}"
        else:
            src, zero, scope, what = head_tensors.get(name), False, "head", f"head/embeddings: {name!r}"
        if src is None:
            if slot == "_buffers" and t is None:
                continue
            raise FrankenError(f"{what}: the source has no such tensor: the models' architectures differ")
        if tuple(src.shape) != tuple(t.shape):
            raise FrankenError(
                f"{what}: incompatible shapes {tuple(src.shape)} in the source and {tuple(t.shape)} expected "
                "(sources must share architecture and hidden size)"
            )
        ck = (scope, id(src))
        if ck not in copies:
            with torch.no_grad():
                c = torch.zeros_like(src) if zero else src.detach().clone(memory_format=torch.contiguous_format)
            copies[ck] = nn.Parameter(c, requires_grad=False) if slot == "_parameters" else c
        owner_name, _, leaf = name.rpartition(".")
        owner = m.get_submodule(owner_name) if owner_name else m
        getattr(owner, slot)[leaf] = copies[ck]
    left = [n for n, x, _ in _named_tensors(m) if x is not None and x.is_meta]
    if left:
        raise FrankenError(f"internal: materialized tensors left unset: {left[:5]}")
    if getattr(head, "generation_config", None) is not None:
        m.generation_config = copy.deepcopy(head.generation_config)
    m.eval().requires_grad_(False)
    return m


def _weights_digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 24):
                h.update(block)
    return h.hexdigest()


def export_hf(
    sources, plan: LayerPlan | str, out_dir: str | os.PathLike, tokenizer=None, head_source: str | None = None
) -> Path:
    """Save the materialized frankenmodel (safetensors), its tokenizer and ``frankenlm.json`` to `out_dir`.

    The directory loads with plain ``AutoModelForCausalLM.from_pretrained(out_dir)``. `tokenizer` may be None
    (then none is saved). ``frankenlm.json`` records the plan, head source, source names/digests and a SHA-256
    of the written weights (``sha256``, which `frankenlm.model.loading` uses as the directory's digest).
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FrankenError(f"export directory {str(out)!r} is an existing file: give a directory path")
    plan = coerce_plan(plan)
    _, info = _unwrap(sources)
    model = materialize(sources, plan, head_source)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.safetensors"):  # shards of an earlier export would be mixed in
        stale.unlink()
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    note = {
        "frankenlm_version": __version__,
        "format": "hf",
        "plan": plan.text(),
        "depth": len(plan),
        "head_source": head_source,
        "sources": {("default" if a is None else a): v for a, v in info.items()},
        "sha256": _weights_digest(out),
    }
    (out / "frankenlm.json").write_text(json.dumps(note, indent=1) + "\n")
    return out


# ------------------------------------------------------------------------------------------- mergekit


def export_mergekit(
    plan: LayerPlan | str,
    models: Mapping[str | None, str] | str,
    out_path: str | os.PathLike,
    dtype: str = "bfloat16",
) -> Path:
    """Write the mergekit ``passthrough`` YAML of a whole-layer plan (`models`: alias → model path or id)."""
    plan = coerce_plan(plan)
    if isinstance(models, (str, os.PathLike)):
        models = {None: str(models)}
    text = to_mergekit(plan, {a: str(p) for a, p in models.items()}, dtype=dtype)
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise FrankenError(f"mergekit output {str(out)!r} is a directory: give a file path such as frankenmodel.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


# ----------------------------------------------------------------------------------------------- GGUF


def gemma3_gguf_layer_type(i: int) -> str:
    """The attention type a GGUF reader gives gemma3 layer `i`.

    GGUF stores no per-layer types for gemma3: llama.cpp (``hparams.set_swa_pattern(6)``: sliding iff
    ``i % 6 < 5``) and transformers (``Gemma3TextConfig`` defaults ``layer_types`` to full iff ``(i + 1) % 6 == 0``,
    the GGUF config mapping has no layer-types key) both derive it from the index.
    """
    return "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"


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


def _field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def export_gguf(
    source_gguf_paths: Mapping[str | None, str | os.PathLike] | str | os.PathLike,
    plan: LayerPlan | str,
    out_path: str | os.PathLike,
    head_source: str | None = None,
) -> Path:
    """Write the frankenmodel of `plan` as a GGUF, copying the sources' tensor bytes without requantizing.

    `source_gguf_paths` maps alias → GGUF path (or zoo name); a single path means the default source. Metadata
    (tokenizer included) and non-block tensors come from `head_source`; ``{arch}.block_count`` becomes
    ``len(plan)``; sublayer positions get an F32 zero ``ffn_down`` (attn-only) or ``attn_output`` (mlp-only).
    """
    import gguf

    plan = coerce_plan(plan)
    paths = as_sources(source_gguf_paths, head_source, "multi-source GGUF exports")
    files = {a: _gguf_source(a, p) for a, p in paths.items()}
    readers = {}
    for a, p in files.items():
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
            f"GGUF {str(files[head_source])!r} has architecture {arch!r}: GGUF export supports {', '.join(GGUF_ARCHS)}"
        )
    depths = {}
    for a, r in readers.items():
        who = f"GGUF {str(files[a])!r}"
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
            raise FrankenError(f"{who}: GGUF {str(files[ref.source])!r} has no blk.{ref.layer}.* tensors")
        for suffix, t in blk.items():
            rt = ref_block.get(suffix)
            if rt is None or list(rt.shape) != list(t.shape):
                theirs = "has no such tensor" if rt is None else f"is {list(rt.shape)}"
                raise FrankenError(
                    f"{who}: tensor {suffix!r} has shape {list(t.shape)} but the head source's {theirs}: "
                    "sources must share architecture and sizes"
                )
        if ref.sublayer != "block" and not any(s.startswith(_GGUF_ZEROED[ref.sublayer]) for s in blk):
            raise FrankenError(
                f"{who}: no {_GGUF_ZEROED[ref.sublayer].rstrip('.')} tensor to zero for a {ref.sublayer}-only position"
            )

    out = Path(out_path).expanduser()
    if out.is_dir():
        raise FrankenError(f"GGUF output {str(out)!r} is a directory: give a file path such as frankenmodel.gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=head.endianess)
    alignment = _field(head, "general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment)

    # metadata: everything from the head source; per-layer arrays remapped; the new depth
    for field in head.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
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
        json.dumps({("default" if a is None else a): p.name for a, p in files.items()}),
        gguf.GGUFValueType.STRING,
    )

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
            if ref.sublayer != "block" and suffix.startswith(_GGUF_ZEROED[ref.sublayer]):
                writer.add_tensor(name, np.zeros(tuple(reversed([int(d) for d in t.shape])), dtype=np.float32))
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
    tmp.replace(out)
    return out
