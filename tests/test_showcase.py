"""The showcase of confirmed configurations: exports reloaded in transformers equal the zero-copy frankenmodel, the
generations are the models' own, and the findings document renders them from the saved JSON alone."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from frankenlm.cli.app import app
from frankenlm.cli.showcase import SHOWCASE, prompt_of, read_showcase, showcase_entry, showcased
from frankenlm.report.findings import _cell, _showcase_lines
from frankenlm.study.runner import run_study
from frankenlm.study.spec import DesignSpec, StudySpec, TaskBudget
from test_study import tiny_dir, tiny_spec  # noqa: F401  (fixture re-export)


def _entry(config="0..2,2@0.25,3..29", base="fine | ok\nthen", fm="fine"):
    return {
        "model": "m",
        "task": "t",
        "config": config,
        "dtype": "float32",
        "max_new_tokens": 40,
        "exports": {
            "hf": {"max_abs_logit_diff": 0.0, "same_generations": True, "bytes": 3 * 2**20},
            "gguf": {"max_abs_logit_diff": 2e-6, "same_generations": False, "bytes": 2**20},
        },
        "generations": [{"item_id": "7", "prompt": "x" * 200, "base": base, "frankenmodel": fm}],
    }


def test_the_document_shows_each_confirmed_configuration_from_the_saved_showcase():
    g = SimpleNamespace(model="m", task="t")
    shown, missing = SimpleNamespace(config="0..2,2@0.25,3..29"), SimpleNamespace(config="0..3,3..29")
    lines = _showcase_lines([(g, shown), (g, missing)], [_entry()], "frankenlm findings findings/")
    text = "\n".join(lines)
    assert "### m · t · `0..2,2@0.25,3..29`" in text
    assert "hf (3 MiB) loaded in transformers: max |Δ logit| 0.0e+00" in text
    assert "gguf (1 MiB)" in text and "greedy text DIFFERENT" in text  # a mismatch is said, not hidden
    assert "| 7 | …" + "x" * 120 + " | fine \\| ok ⏎ then | fine |" in text  # one row per item, cells escaped
    assert "`0..3,3..29`: not showcased yet (`frankenlm findings findings/ --showcase`)" in text
    assert _cell("") == "(nothing)" and _cell("a\\|b") == "a\\\\\\|b"


def test_prompts_are_a_texts_opening_or_an_items_question():
    from frankenlm.eval.tasks.requests import LoglikelihoodRequest, RollingRequest

    words = " ".join(f"word{k}" for k in range(100))
    rolling = prompt_of(SimpleNamespace(requests=(RollingRequest(words),)))
    assert words.startswith(rolling) and 200 < len(rolling) <= 240 and words[len(rolling)] == " "
    assert prompt_of(SimpleNamespace(requests=(RollingRequest(" short text\n"),))) == "short text"
    question = SimpleNamespace(requests=(LoglikelihoodRequest("Question: why?\nAnswer:", " because"),))
    assert prompt_of(question) == "Question: why?\nAnswer:"


def test_findings_showcase_on_a_study_without_confirmed_configurations(tiny_dir, tmp_path):  # noqa: F811
    run = run_study(tiny_spec(str(tiny_dir)), tmp_path / "run")
    res = CliRunner().invoke(app, ["findings", str(run), "--out", str(tmp_path / "F.md"), "--showcase"])
    assert res.exit_code == 0, res.output
    entries = json.loads((run / SHOWCASE).read_text())["entries"]
    found = showcased([run])
    assert [(e["model"], e["task"], e["config"]) for e in entries] == [c[1:] for c in found]
    text = (tmp_path / "F.md").read_text()
    assert ("exported and generating" in text) == bool(found)
    for e in entries:  # a Hugging Face source: its hf export is checked, a GGUF one cannot be written
        assert e["exports"]["hf"]["same_generations"] and "skipped" in e["exports"]["gguf"]
    (run / SHOWCASE).unlink()
    (run / SHOWCASE).mkdir()  # hostile: the file's place is taken by a folder
    bad = CliRunner().invoke(app, ["findings", str(run), "--out", str(tmp_path / "F.md"), "--showcase"])
    assert bad.exit_code == 2 and "is a directory" in bad.output


@pytest.mark.slow
def test_showcase_of_a_damped_repeat_on_smollm2(tmp_path):
    """On the real model: the hf and gguf exports of a scaled repeat, loaded by transformers, give the zero-copy
    frankenmodel's logits and greedy text, and the prompts are the openings of the task's held-out passages."""
    from frankenlm.model.loading import load_model
    from frankenlm.model.zoo import cache_root

    torch.set_num_threads(2)
    run = tmp_path / "run"
    run.mkdir()
    budget = TaskBudget("lambada_passages", search_tokens=2048, heldout_tokens=1024)
    spec = StudySpec("t", ["smollm2-135m"], [budget], [DesignSpec("repeat-layer", {"layers": [2]})])
    (run / "spec.json").write_text(spec.to_json())
    work = tmp_path / "work"
    work.mkdir()
    load_model("smollm2-135m", dtype="float32")  # the base's own conversion, made by whichever load comes first
    cached = set((cache_root() / "hf").glob("*"))
    e = showcase_entry(run, "smollm2-135m", "lambada_passages", "0..2,2@0.25,3..29", work)
    assert set((cache_root() / "hf").glob("*")) <= cached  # the exports leave nothing in the model cache
    for fmt in ("hf", "gguf"):
        assert e["exports"][fmt]["max_abs_logit_diff"] <= 1e-4, fmt
        assert e["exports"][fmt]["same_generations"], fmt
    assert e["exports"]["hf"]["bytes"] > e["exports"]["gguf"]["bytes"] > 0
    gens = e["generations"]
    assert len(gens) == 3 and all(g["prompt"] and g["base"] and g["frankenmodel"] for g in gens)
    assert any(g["base"] != g["frankenmodel"] for g in gens)  # the repeat changes what the model says
    from frankenlm.study.items import select_items

    lm = load_model("smollm2-135m", dtype="float32")
    docs = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed).heldout[:3]
    for g, d in zip(gens, docs, strict=True):  # each prompt is the opening of that held-out passage
        assert g["item_id"] == d.item_id and d.requests[0].text.strip().startswith(g["prompt"])
        assert 0 < len(g["prompt"]) <= 240
    (tmp_path / SHOWCASE).write_text(json.dumps({"entries": [e]}))
    assert read_showcase([tmp_path, run]) == [e]


def test_a_new_showcase_keeps_the_entries_of_configurations_still_confirmed(tmp_path, monkeypatch):
    """Only configurations showcase.json does not show yet are exported again; ones no longer confirmed are
    dropped; --showcase-all (redo) exports every one."""
    from frankenlm.cli import showcase

    out = tmp_path / SHOWCASE
    out.write_text(json.dumps({"entries": [_entry("a", fm="old a"), _entry("c")]}))
    monkeypatch.setattr(showcase, "showcased", lambda dirs: [(tmp_path, "m", "t", "a"), (tmp_path, "m", "t", "b")])
    made = []

    def entry(run_dir, model, task, config, workdir):
        made.append(config)
        return _entry(config, fm=f"new {config}")

    monkeypatch.setattr(showcase, "showcase_entry", entry)
    showcase.write_showcase([tmp_path], out, notify=lambda m: None)
    assert made == ["b"]
    got = json.loads(out.read_text())["entries"]
    assert [(e["config"], e["generations"][0]["frankenmodel"]) for e in got] == [("a", "old a"), ("b", "new b")]
    showcase.write_showcase([tmp_path], out, notify=lambda m: None, redo=True)
    assert made == ["b", "a", "b"]
