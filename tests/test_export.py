"""Exports: HF directories, mergekit YAML and GGUF files reproduce the zero-copy frankenmodel.

Truth is always the zero-copy frankenmodel (itself checked against independent references in
test_frankenmodel.py); exports are loaded fresh by plain transformers, and their files are inspected directly
(safetensors headers, GGUF tensors and bytes).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from frankenlm.errors import FrankenError
from frankenlm.export import export_gguf, export_hf, gemma3_gguf_layer_type, materialize
from frankenlm.model.frankenmodel import build_frankenmodel, decoder_layers, storage_ptrs
from frankenlm.model.plan import parse_plan
from tiny import ARCHS, PLANS, load_gguf, sources_for, tiny_model, tiny_model_gguf_ready, write_tiny_gguf


def _numel_unique(tensors) -> int:
    seen = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.numel()
    return sum(seen.values())


# ----------------------------------------------------------------------------------------------------- HF


@pytest.mark.parametrize("plan_name", list(PLANS))
@pytest.mark.parametrize("arch", ARCHS)
def test_hf_export_reloads_to_the_frankenmodel(bases, ids, tmp_path, arch, plan_name):
    src = sources_for(bases, arch, plan_name)
    srcs = src if isinstance(src, dict) else {None: src}
    text = PLANS[plan_name]
    plan = parse_plan(text)
    fm = build_frankenmodel(src, text)
    out = export_hf(src, text, tmp_path / "fm", tokenizer=None)

    loaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(loaded) is type(srcs[None])
    assert loaded.config.num_hidden_layers == len(plan)
    if arch == "gemma3":
        want = [srcs[r.source].config.layer_types[r.layer] for r in plan]
        assert loaded.config.layer_types == want
        assert [layer.self_attn.sliding_window for layer in decoder_layers(loaded)] == [
            4 if t == "sliding_attention" else None for t in want
        ]
    with torch.no_grad():
        diff = (loaded(ids).logits - fm(ids).logits).abs().max().item()
    assert diff <= 1e-5

    # the file itself: every position holds its source layer's exact weights, the zeroed projection zero
    files = list(out.glob("*.safetensors"))
    assert len(files) == 1
    with safe_open(str(files[0]), "pt") as f:
        keys = set(f.keys())
        for pos, r in enumerate(plan):
            for name, p in decoder_layers(srcs[r.source])[r.layer].named_parameters():
                t = f.get_tensor(f"model.layers.{pos}.{name}")
                zeroed = (r.sublayer == "attn" and name.startswith("mlp.down_proj.")) or (
                    r.sublayer == "mlp" and name.startswith("self_attn.o_proj.")
                )
                if zeroed:
                    assert not t.any(), (pos, name)
                else:
                    assert torch.equal(t, p), (pos, name)
        assert not any(k.startswith(f"model.layers.{len(plan)}.") for k in keys)

    # on-disk size: exactly the effective parameters in fp32 plus the safetensors header
    head = srcs[None]
    non_layer = [t for n, t in head.named_parameters(remove_duplicate=False) if not n.startswith("model.layers.")]
    per_layer = sum(p.numel() for p in decoder_layers(head)[0].parameters())
    effective = _numel_unique(non_layer) + len(plan) * per_layer
    raw = files[0].read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    assert len(raw) == 8 + header_len + 4 * effective

    note = json.loads((out / "frankenlm.json").read_text())
    assert parse_plan(note["plan"]) == plan
    assert note["depth"] == len(plan)
    assert set(note["sources"]) == ({"default", "b"} if plan_name == "two_source" else {"default"})
    assert len(note["sha256"]) == 64


@pytest.mark.parametrize("arch", ARCHS)
def test_materialize_owns_its_weights(bases, ids, arch):
    base = bases[arch][None]
    m = materialize(base, "0..2,2.attn*2,3..5")
    assert not set(storage_ptrs(m)) & set(storage_ptrs(base))
    # repeated positions are distinct storages too (safetensors refuses shared tensors)
    layers = decoder_layers(m)
    assert layers[2].self_attn.q_proj.weight.data_ptr() != layers[3].self_attn.q_proj.weight.data_ptr()
    before = base(ids).logits
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.5)
        assert torch.equal(base(ids).logits, before)
    # tied heads stay tied in the copy, untied ones stay separate
    tied = base.lm_head.weight is base.model.embed_tokens.weight
    assert (m.lm_head.weight is m.model.embed_tokens.weight) == tied


def test_hf_export_keeps_dtype_and_tokenizer_is_optional(tmp_path):
    base = tiny_model("qwen2").to(torch.bfloat16)
    out = export_hf(base, "0..5,5", tmp_path / "bf16", None)
    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.model.layers[6].mlp.up_proj.weight, base.model.layers[5].mlp.up_proj.weight)
    assert not list(out.glob("tokenizer*"))


def test_hf_export_errors(bases, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FrankenError, match="existing file"):
        export_hf(bases["llama"][None], "0..5", f, None)
    with pytest.raises(FrankenError, match=r"layer 7 is out of range: the model has layers 0\.\.5"):
        export_hf(bases["llama"][None], "0..4,7", tmp_path / "x", None)


# ---------------------------------------------------------------------------------------------------- GGUF


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory):
    """arch → {alias: GGUF path}, F32 GGUFs written from tiny models as llama.cpp's converter would."""
    d = tmp_path_factory.mktemp("gguf")
    out = {}
    for arch in ARCHS:
        out[arch] = {}
        for alias, seed in ((None, 0), ("b", 1)):
            p = d / f"{arch}-{seed}.gguf"
            write_tiny_gguf(tiny_model_gguf_ready(arch, seed=seed), p)
            out[arch][alias] = p
    return out


@pytest.fixture(scope="module")
def tiny_gguf_bases(tiny_ggufs):
    return {arch: {a: load_gguf(p) for a, p in paths.items()} for arch, paths in tiny_ggufs.items()}


def _gemma3_keeps_pattern(text: str) -> bool:
    return all(gemma3_gguf_layer_type(r.layer) == gemma3_gguf_layer_type(pos) for pos, r in enumerate(parse_plan(text)))


GEMMA3_GGUF_PLANS = {  # plans that keep every 6th position on a full-attention layer
    "repeat_aligned": "0..5,0..5",
    "attn_only": "0..5,0..1,2.attn*2,3,5",
    "mlp_only": "0.mlp,1..5,0..3,1.mlp,5",
    "two_source": "0..5,b:0..5",
}


def test_tiny_gguf_writer_round_trips(tiny_ggufs, tiny_gguf_bases, ids):
    """The tiny GGUF sources load back as the models they were written from (checks the test helper)."""
    for arch in ARCHS:
        with torch.no_grad():
            want = tiny_model_gguf_ready(arch, seed=0)(ids).logits
            got = tiny_gguf_bases[arch][None](ids).logits
        assert (want - got).abs().max().item() <= 1e-6, arch


@pytest.mark.parametrize(
    "arch,plan_name",
    [(a, p) for a in ("llama", "qwen2") for p in PLANS] + [("gemma3", p) for p in GEMMA3_GGUF_PLANS],
)
def test_gguf_export_tiny_reloads_to_the_frankenmodel(tiny_ggufs, tiny_gguf_bases, ids, tmp_path, arch, plan_name):
    text = (GEMMA3_GGUF_PLANS if arch == "gemma3" else PLANS)[plan_name]
    plan = parse_plan(text)
    two = plan_name == "two_source"
    paths = tiny_ggufs[arch] if two else tiny_ggufs[arch][None]
    out = export_gguf(paths, text, tmp_path / "fm.gguf")
    r = gguf.GGUFReader(out)
    src = gguf.GGUFReader(tiny_ggufs[arch][None])
    assert r.get_field(f"{arch}.block_count").contents() == len(plan)
    per_block = sum(t.name.startswith("blk.0.") for t in src.tensors)
    non_block = sum(not t.name.startswith("blk.") for t in src.tensors)
    assert len(r.tensors) == non_block + per_block * len(plan)

    loaded = load_gguf(out)
    fm = build_frankenmodel(tiny_gguf_bases[arch] if two else tiny_gguf_bases[arch][None], text)
    with torch.no_grad():
        diff = (loaded(ids).logits - fm(ids).logits).abs().max().item()
    assert diff <= 1e-5
    if arch == "gemma3":
        assert loaded.config.layer_types == fm.config.layer_types


def test_gguf_export_gemma3_refuses_plans_that_move_full_attention(tiny_ggufs, tmp_path):
    """GGUF readers derive gemma3's sliding/full pattern from the layer index: a plan that moves a full-attention
    layer would silently change the model, so it is refused."""
    refused = [name for name, text in PLANS.items() if not _gemma3_keeps_pattern(text)]
    assert refused  # the generic plans all move layer 5 off position 5
    for name in refused:
        paths = tiny_ggufs["gemma3"] if name == "two_source" else tiny_ggufs["gemma3"][None]
        with pytest.raises(FrankenError, match="cannot be a gemma3 GGUF: position .* every 6th layer"):
            export_gguf(paths, PLANS[name], tmp_path / "g.gguf")
    assert not (tmp_path / "g.gguf").exists()


def test_gguf_gemma3_refusal_is_needed(tiny_ggufs, tiny_gguf_bases, ids, tmp_path, monkeypatch):
    """With the check disabled, such a GGUF loads with the index-derived layer types and other logits."""
    import frankenlm.export.gguf as export

    monkeypatch.setattr(export, "gemma3_gguf_layer_type", lambda i: "unchecked")
    text = PLANS["repeat_block"]
    out = export_gguf(tiny_ggufs["gemma3"][None], text, tmp_path / "g.gguf")
    loaded = load_gguf(out)
    fm = build_frankenmodel(tiny_gguf_bases["gemma3"][None], text)
    assert loaded.config.layer_types != fm.config.layer_types
    assert loaded.config.layer_types[5] == "full_attention" and fm.config.layer_types[5] == "sliding_attention"
    with torch.no_grad():
        assert (loaded(ids).logits - fm(ids).logits).abs().max().item() > 1e-2


def test_gguf_export_errors(bases, tiny_ggufs, tmp_path):
    hf_dir = export_hf(bases["llama"][None], "0..5", tmp_path / "hf", None)
    with pytest.raises(FrankenError, match="convert_hf_to_gguf.py"):
        export_gguf(hf_dir, "0..5", tmp_path / "x.gguf")
    with pytest.raises(FrankenError, match=r"is not one \(first bytes b'\{"):
        export_gguf(hf_dir / "config.json", "0..5", tmp_path / "x.gguf")
    with pytest.raises(FrankenError, match=r"layer 6 is out of range: the model has layers 0\.\.5"):
        export_gguf(tiny_ggufs["llama"][None], "0..6", tmp_path / "x.gguf")
    narrow = tmp_path / "narrow.gguf"
    write_tiny_gguf(tiny_model("llama", seed=2, intermediate=48), narrow)
    with pytest.raises(FrankenError, match="ffn_.*has shape"):
        export_gguf({None: tiny_ggufs["llama"][None], "b": narrow}, "0..2,b:3..5", tmp_path / "x.gguf")
    with pytest.raises(FrankenError, match="architecture 'qwen2' but the head source has 'llama'"):
        mixed = {None: tiny_ggufs["llama"][None], "b": tiny_ggufs["qwen2"][None]}
        export_gguf(mixed, "0..2,b:3..5", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_gguf_export_smollm2_raw_bytes_and_logits(tmp_path):
    """Real Q4_1 model: one plan with a repeated block, attention-only and MLP-only repeats (one GGUF load,
    ~15 s, covers all three)."""
    from frankenlm.model import zoo
    from frankenlm.model.loading import load_model

    torch.set_num_threads(1)
    src_path = zoo.gguf_path("smollm2-135m")
    lm = load_model("smollm2-135m")  # the dequantized base (safetensors cache of the same GGUF)
    text = "0..20,10..15,15.attn*2,16.mlp,16..29"
    plan = parse_plan(text)
    out = export_gguf(src_path, text, tmp_path / "fm.gguf")

    src = gguf.GGUFReader(src_path)
    r = gguf.GGUFReader(out)
    assert r.get_field("llama.block_count").contents() == len(plan) == 44
    assert r.get_field("frankenlm.plan").contents() == plan.text()
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "llama.rope.freq_base"):
        assert r.get_field(key).contents() == src.get_field(key).contents(), key
    src_t = {t.name: t for t in src.tensors}
    assert len(r.tensors) == 2 + 9 * len(plan)  # token_embd, output_norm (tied head), 9 per block
    for t in r.tensors:
        if not t.name.startswith("blk."):
            s = src_t[t.name]
        else:
            _, pos, suffix = t.name.split(".", 2)
            ref = plan[int(pos)]
            s = src_t[f"blk.{ref.layer}.{suffix}"]
            zeroed = (ref.sublayer == "attn" and suffix.startswith("ffn_down.")) or (
                ref.sublayer == "mlp" and suffix.startswith("attn_output.")
            )
            if zeroed:
                assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == list(s.shape)
                assert not np.any(t.data)
                continue
        assert t.tensor_type == s.tensor_type and list(t.shape) == list(s.shape), t.name
        assert np.array_equal(np.asarray(t.data), np.asarray(s.data)), t.name  # raw bytes, no requantization
    payload = sum(int(t.n_bytes) for t in r.tensors)
    assert payload < out.stat().st_size < payload + 4_000_000  # plus metadata (tokenizer ~2 MB) and padding

    loaded = load_gguf(out)
    fm = build_frankenmodel(lm.model, text)
    ids = torch.tensor([lm.tokenizer.encode("The old lighthouse keeper climbed the stairs every evening to light the")])
    with torch.no_grad():
        diff = (loaded(ids).logits - fm(ids).logits).abs().max().item()
        assert (fm(ids).logits - lm.model(ids).logits).abs().max() > 1e-2
    assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("plan", ["0..20,10..29", "0..7,7@0.5/0.2,8..29,29^0.8"])
def test_mergekit_cli_merges_the_export_as_written(tmp_path, plan):
    """mergekit's own CLI on frankenlm's YAML, unedited (a plain duplication and a healed repeat with scale
    filters): the merged model's logits are the zero-copy frankenmodel's."""
    import shutil
    import subprocess
    import sys

    from typer.testing import CliRunner

    from frankenlm.cli.app import app
    from frankenlm.model.loading import load_model

    exe = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")
    if not Path(exe).exists():
        pytest.skip("mergekit is not installed (pip install 'frankenlm[test]' installs mergekit 0.1.5)")
    yml = tmp_path / "merge.yaml"
    res = CliRunner().invoke(
        app, ["export", "--format", "mergekit", "--plan", plan, "--out", str(yml), "--dtype", "float32"]
    )
    assert res.exit_code == 0, res.output
    merged = tmp_path / "merged"
    run = subprocess.run([exe, str(yml), str(merged)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lm = load_model("smollm2-135m", dtype="float32")
    ids = torch.tensor([lm.tokenizer.encode("The old lighthouse keeper climbed the stairs every evening")])
    other = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        want = build_frankenmodel(lm.model, plan)(ids).logits
        got = other(ids).logits
    assert (got - want).abs().max().item() <= 1e-4
