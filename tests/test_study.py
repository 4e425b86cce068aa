"""The study engine: prefix reuse gives the naive path's numbers, racing keeps the leaders, and a study killed
with SIGKILL at random moments resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frankenlm.errors import FrankenError
from frankenlm.model.loading import load_model
from frankenlm.study import designs
from frankenlm.study.items import select_items
from frankenlm.study.runner import run_study, study_candidates
from frankenlm.study.spec import DesignSpec, EarlyStopping, StudySpec, TaskBudget
from frankenlm.study.store import Store
from frankenlm.study.sweep import race

ROOT = Path(__file__).resolve().parents[1]


def write_report(run_dir):
    from frankenlm.report.page import write_report as write

    return write(run_dir)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random llama with the real smollm2 tokenizer, saved as a HF directory (a supported source)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(load_model("smollm2-135m").path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_spec(model: str, early: bool = True) -> StudySpec:
    return StudySpec(
        "test",
        [model],
        [TaskBudget("lambada_passages", search_tokens=900, heldout_tokens=300)],
        [
            DesignSpec("repeat-block", {"stride": 2}),
            DesignSpec("repeat-layer", {"layers": [1, 4], "max_repeats": 2}),
            DesignSpec("sublayer", {"layers": [2]}),
        ],
        dtype="float32",
        slices=3,
        early_stopping=EarlyStopping(level=0.9) if early else None,
        heldout_top_k=2,
        fp32_top_k=0,
        batch_size=4,
        context_length=256,
    )


def _all_items(store: Store) -> dict[str, list]:
    return {
        row[0]: store.db.execute("SELECT items FROM results WHERE key=?", (row[0],)).fetchone()[0]
        for row in store.rows()
    }


def test_prefix_reuse_gives_the_naive_numbers(tiny_dir, tmp_path):
    torch.set_num_threads(1)
    spec = tiny_spec(str(tiny_dir), early=False)
    lm = load_model(str(tiny_dir))
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    configs = study_candidates(spec, lm.depth)
    assert len(configs) >= 10
    fast, naive = Store(tmp_path / "fast.sqlite"), Store(tmp_path / "naive.sqlite")
    race(spec, lm, items, configs, fast, reuse=True, early_stopping=False)
    race(spec, lm, items, configs, naive, reuse=False, early_stopping=False)
    a, b = _all_items(fast), _all_items(naive)
    assert a.keys() == b.keys() and len(a) == (len(configs) + 1) * spec.slices
    worst = 0.0
    for k in a:
        for x, y in zip(json.loads(a[k]), json.loads(b[k]), strict=True):
            assert x["item_id"] == y["item_id"]
            worst = max(worst, abs(x["extras"]["nll"] - y["extras"]["nll"]))
    assert worst <= 1e-4


@pytest.mark.parametrize("scoring", ["fast", "lm-eval"])
def test_a_slice_whose_base_is_stored_runs_the_base_only_to_the_deepest_boundary(tiny_dir, scoring):
    """A resumed slice whose base unit is stored scores no base pass: the first plan's own calls record the
    prefix states in a base pass that stops entering the deepest boundary layer, its seconds leave that pass
    out (recorded apart), and every plan's items equal those of the slice prepared with its base."""
    from collections import Counter

    from frankenlm.model.frankenmodel import decoder_layers
    from frankenlm.model.plan import parse_plan
    from frankenlm.study.units import SliceScorer

    torch.set_num_threads(1)
    spec = tiny_spec(str(tiny_dir), early=False)
    spec.scoring = scoring
    lm = load_model(str(tiny_dir))
    docs = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed).heldout
    plans = [parse_plan("0..3,3,4..5"), parse_plan("0..1,1.attn,2..5")]  # base prefixes 4 and 2
    # hooks on the base's own layers (a frankenmodel's positions are modules of their own sharing the tensors,
    # so these count the base's passes only)
    calls: Counter = Counter()
    hooks = [
        layer.register_forward_hook(lambda *a, k=k: calls.update([k]))
        for k, layer in enumerate(decoder_layers(lm.model))
    ]
    try:
        full = SliceScorer(spec, lm)
        full.prepare(docs, [full.base, *plans])
        batches = calls[0]
        assert batches > 0 and [calls[k] for k in range(6)] == [batches] * 6  # the base scored: every layer
        expected = [full.score(p)[0] for p in plans]
        calls.clear()
        resumed = SliceScorer(spec, lm)
        resumed.prepare(docs, plans)
        assert not calls, "a base pass ran although the base is not wanted"
        items, meta = resumed.score(plans[0], remaining=plans[1:])
    finally:
        for h in hooks:
            h.remove()
    # the states pass stops entering layer 4, the deepest boundary: layers 4 and 5 of the base never ran
    assert [calls[k] for k in range(6)] == [batches] * 4 + [0, 0]
    assert items == expected[0] and meta["prefix_reused"] == 4
    assert meta["prefix_states_seconds"] > 0 and meta["seconds"] > 0
    items, meta = resumed.score(plans[1], remaining=[])
    assert items == expected[1] and meta["prefix_reused"] == 2 and "prefix_states_seconds" not in meta
    # asked for after all, the base is scored then
    assert resumed.score(resumed.base)[0] == full.score(full.base)[0]


def test_racing_stops_clearly_worse_configs_but_never_the_leaders(tiny_dir, tmp_path):
    spec = tiny_spec(str(tiny_dir))
    # aggressive, so that something stops on this tiny budget
    spec.early_stopping = EarlyStopping(level=0.5, min_items=1)
    lm = load_model(str(tiny_dir))
    items = select_items(spec.tasks[0], lm.tokenizer, spec.slices, spec.seed)
    configs = study_candidates(spec, lm.depth)
    seen = race(spec, lm, items, configs, Store(tmp_path / "r.sqlite"))
    full = [p for p, k in seen.items() if k == spec.slices]
    stopped = [p for p, k in seen.items() if k < spec.slices]
    assert stopped, "level 0.5 on a random model should stop some configs"
    assert len(full) >= spec.heldout_top_k

    # the same racing rule takes no decision before it has seen min_items documents
    assert any(k == 1 for k in seen.values()), "nothing stopped at the first look"
    first = len(items.search_slices[0])
    spec.early_stopping = EarlyStopping(level=0.5, min_items=first + 1)
    seen2 = race(spec, lm, items, configs, Store(tmp_path / "r.sqlite"))
    assert all(seen2[p] >= 2 for p in seen2), "a config was dropped after fewer than min_items documents"


def _study_cmd(spec_path: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "frankenlm",
        "study",
        "--spec",
        str(spec_path),
        "--out",
        str(run_dir),
        "--resume",
        "--threads",
        "1",
    ]


@pytest.mark.slow
def test_kill_minus_nine_then_resume_equals_uninterrupted_run(tiny_dir, tmp_path):
    spec = tiny_spec(str(tiny_dir))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_study_cmd(spec_path, ref_dir), check=True, env=env, capture_output=True, timeout=600)
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        p = subprocess.Popen(
            _study_cmd(spec_path, run_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 6.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 2
    subprocess.run(_study_cmd(spec_path, run_dir), check=True, env=env, capture_output=True, timeout=600)
    ref, got = Store(ref_dir / "results.sqlite"), Store(run_dir / "results.sqlite")
    a, b = _all_items(ref), _all_items(got)
    assert a.keys() == b.keys()  # no missing and (primary key) no duplicate rows
    assert got.db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == len(a)
    assert got.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for k in a:
        assert json.loads(a[k]) == json.loads(b[k])
    assert (ref_dir / "results.csv").read_text() == (run_dir / "results.csv").read_text()
    assert (run_dir / "report.html").exists()


@pytest.mark.slow
def test_ctrl_c_stops_a_study_at_once_and_it_resumes(tiny_dir, tmp_path):
    """SIGINT (Ctrl-C) mid-study: exit status 130 within seconds, a one-line message, the store intact; the same
    command then finishes. (A study started with `cmd &` from a non-interactive shell ignores SIGINT, as POSIX
    has background jobs do: stop those with SIGTERM, which the store survives like SIGKILL.)"""
    spec = tiny_spec(str(tiny_dir), early=False)  # every configuration on every slice: still running at the signal
    spec.tasks = [TaskBudget("lambada_passages", search_tokens=4000, heldout_tokens=300)]
    spec.slices = 8
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    run_dir = tmp_path / "run"
    # A test runner started in the background (`make test &`) ignores SIGINT, and so would the study it starts
    # (ignored signals survive exec): give the study the default disposition a terminal's foreground job has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        p = subprocess.Popen(_study_cmd(spec_path, run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:  # wait until units are being written
        db = run_dir / "results.sqlite"
        if db.exists():
            st = Store(db)
            n = st.count()
            st.close()
            if n >= 3:
                break
        time.sleep(0.2)
    assert p.poll() is None, "the study finished before it could be interrupted"
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 15
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    st = Store(run_dir / "results.sqlite")
    assert st.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    st.close()
    subprocess.run(_study_cmd(spec_path, run_dir), check=True, env=env, capture_output=True, timeout=600)
    assert (run_dir / "results.csv").is_file()


def test_designs_generate_the_expected_plans():
    assert len(designs.repeat_block(30)) == 465
    assert len(designs.repeat_layer(30, max_repeats=3, every=3)) == 30
    subl = designs.sublayer(30, every=6)
    assert [c.params["sublayer"] for c in subl[:3]] == ["block", "attn", "mlp"]
    spec = tiny_spec("x")
    cfgs = study_candidates(spec, 6)
    texts = [c.text for c in cfgs]
    assert len(texts) == len(set(texts)) and "0..5" not in texts


def test_signals_match_a_second_code_path(tiny_dir):
    """Block influence from the recorder's hooks == 1 - cos of the layer inputs the prefix cache records."""
    from frankenlm.eval.packing import Pack, pack_batch
    from frankenlm.study.prefix_cache import PrefixCache
    from frankenlm.study.signals import SignalRecorder

    lm = load_model(str(tiny_dir))
    ids = torch.randint(0, 1000, (2, 12))
    mask = torch.ones_like(ids)
    rec = SignalRecorder(lm.model)
    rec(pack_batch([Pack(tuple(row), ((0,),), ((0,),)) for row in ids.tolist()]))
    pc = PrefixCache(lm.model)
    captured = {}
    h = lm.model.model.norm.register_forward_pre_hook(lambda m, a: captured.setdefault("last", a[0].clone()))
    pc.base_forward(ids, mask)
    h.remove()
    states = pc.states[next(iter(pc.states))]
    xs = [states[k] for k in range(lm.depth)] + [captured["last"]]
    for k in range(lm.depth):
        cos = torch.nn.functional.cosine_similarity(xs[k].flatten(0, 1), xs[k + 1].flatten(0, 1), dim=-1)
        assert rec.result()["block_influence"][k] == pytest.approx(1 - float(cos.mean()), abs=1e-5)


def test_search_design_composes_greedily_and_is_reported(tiny_dir, tmp_path):
    spec = tiny_spec(str(tiny_dir))
    spec.designs = [
        DesignSpec("repeat-layer", {"layers": [0, 1, 2, 3, 4, 5], "max_repeats": 1}),
        DesignSpec("search", {"candidates": 3, "steps": 3}),
    ]
    spec.early_stopping = None
    run_study(spec, tmp_path / "run")
    write_report(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    info = next(iter(manifest["models"].values()))
    search = [c for c in info["configs"] if c["design"] == "search"]
    bi = info["tasks"]["lambada_passages"]["signals"]["block_influence"]
    lowest = sorted(range(6), key=lambda k: (bi[k], k))[:3]
    # step 1 candidates are the three lowest-influence layers (their single repeats were already measured by
    # repeat-layer, so they keep that design's name); later steps compose two or more repeats
    assert all(set(c["layers"]) <= set(lowest) for c in search)
    assert search and all(len(c["layers"]) >= 2 for c in search)
    study = json.loads((tmp_path / "run" / "study.json").read_text())
    chk = study["signals"][info["name"]]["lambada_passages"]
    assert chk["layers_measured"] == list(range(6))
    assert -1.0 <= chk["block_influence"]["rho"] <= 1.0
    assert "Do cheap per-layer signals predict the gains?" in (tmp_path / "run" / "report.html").read_text()


def test_prefix_reuse_when_the_whole_base_is_the_prefix():
    """Repeating the last layer shares all N base layers: the cache reuses the state entering layer N-1."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from frankenlm.model.frankenmodel import build_frankenmodel
    from frankenlm.model.plan import parse_plan
    from frankenlm.study.prefix_cache import PrefixCache
    from tiny import random_ids, tiny_model

    base = tiny_model("llama")
    ids = random_ids(12, batch=2)
    mask = torch.ones_like(ids)
    pc = PrefixCache(base, {6})
    pc.base_forward(ids, mask)
    fwd, k = pc.forward_for(parse_plan("0..5,5*2"))
    assert k == 5
    full = build_frankenmodel(base, "0..5,5*2")(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(fwd(ids, mask), full)


def test_a_run_is_resumed_on_the_device_kind_it_started_on(tiny_dir, tmp_path):
    spec = tiny_spec(str(tiny_dir))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(spec.to_json())
    (run_dir / "manifest.json").write_text(json.dumps({"device_type": "cuda", "models": {}}))
    with pytest.raises(FrankenError, match="was run on cuda: resume it on cuda"):
        run_study(spec, run_dir, device="cpu")
    assert not (run_dir / "results.sqlite").exists(), "refused after touching the store"


def test_a_run_is_resumed_only_on_a_machine_of_the_arithmetic_it_started_on(tiny_dir, tmp_path, monkeypatch):
    """bf16 numbers differ between CPU kinds by more than a study's effects: a run records its kind, every unit
    records the kind that computed it, a resume on another kind is refused before the store is touched, and the
    results are read back under the run's kind on any machine."""
    import frankenlm.study.runner as runner_module
    import frankenlm.study.store as store_module
    from frankenlm.model.arithmetic import HISTORIC_CPU_KIND, cpu_kind
    from frankenlm.study.runner import rewrite_results

    spec = tiny_spec(str(tiny_dir))
    spec.dtype = "bfloat16"  # (float32 tasks are computed alike by every CPU: see the next test)
    run_dir = run_study(spec, tmp_path / "run")
    here = cpu_kind()
    assert json.loads((run_dir / "manifest.json").read_text())["arithmetic"] == here
    store = Store(run_dir / "results.sqlite", arithmetic=here)
    metas = [json.loads(m) for (m,) in store.db.execute("SELECT meta FROM results")]
    assert metas and {m["arithmetic"] for m in metas} == {here}
    rows, csv = store.count(), (run_dir / "results.csv").read_text()

    monkeypatch.setattr(runner_module, "arithmetic_kind", lambda device: "cpu-elsewhere")
    with pytest.raises(FrankenError, match=f"computed with {here} arithmetic and this machine computes with cpu-else"):
        run_study(spec, run_dir)
    assert store.count() == rows
    # a run from before kinds were recorded was computed on the historic kind
    old = tmp_path / "old"
    old.mkdir()
    (old / "spec.json").write_text(spec.to_json())
    (old / "manifest.json").write_text(json.dumps({"device_type": "cpu", "models": {}}))
    with pytest.raises(FrankenError, match=f"computed with {HISTORIC_CPU_KIND} arithmetic"):
        run_study(spec, old)
    assert not (old / "results.sqlite").exists()

    monkeypatch.setattr(store_module, "cpu_kind", lambda: "cpu-elsewhere")  # read on another machine
    (run_dir / "results.csv").unlink()
    assert (rewrite_results(run_dir) / "results.csv").read_text() == csv


def test_float32_tasks_continue_on_any_cpu_kind_and_bf16_ones_only_on_theirs(tiny_dir, tmp_path, monkeypatch):
    """A task may name its own dtype. A float32 task's units are shared by every CPU kind, so a run whose bf16
    units came from another kind continues its float32 tasks here (recomputed units equal the stored ones) and
    skips, before computing, a bf16 task that still misses units (keeping its record)."""
    import frankenlm.study.runner as runner_module
    import frankenlm.study.units as units_module
    from frankenlm.model.arithmetic import cpu_kind

    spec = tiny_spec(str(tiny_dir))
    spec.dtype = "bfloat16"
    spec.tasks.append(TaskBudget("arc_easy", search_items=12, heldout_items=6, dtype="float32"))
    spec.validate()
    written = json.loads(spec.to_json())["tasks"]
    assert "dtype" not in written[0] and written[1]["dtype"] == "float32"  # only a task's own dtype is written
    run_dir = run_study(spec, tmp_path / "run")
    here = cpu_kind()
    store = Store(run_dir / "results.sqlite", arithmetic=here)
    dtypes = dict(store.db.execute("SELECT task, dtype FROM results GROUP BY task"))
    assert dtypes == {"lambada_passages": "bfloat16", "arc_easy": "float32"}
    csv = (run_dir / "results.csv").read_text()
    arc = dict(store.db.execute("SELECT key, items FROM results WHERE task='arc_easy'"))
    dropped = sorted(arc)[:3]
    store.db.execute(f"DELETE FROM results WHERE key IN ({','.join('?' * len(dropped))})", dropped)

    monkeypatch.setattr(runner_module, "arithmetic_kind", lambda device: "cpu-elsewhere")
    monkeypatch.setattr(units_module, "arithmetic_kind", lambda device: "cpu-elsewhere")
    run_study(spec, run_dir)  # the float32 task goes on here; the bf16 one is all stored
    again = dict(store.db.execute("SELECT key, items FROM results WHERE task='arc_easy'"))
    assert again == arc, "float32 units recomputed on another kind differ, or were stored under other keys"
    metas = [json.loads(m) for (m,) in store.db.execute("SELECT meta FROM results WHERE key IN (?,?,?)", dropped)]
    assert {m["arithmetic"] for m in metas} == {"cpu-elsewhere"}
    assert (run_dir / "results.csv").read_text() == csv

    (bf16_key,) = store.db.execute("SELECT key FROM results WHERE task='lambada_passages' LIMIT 1").fetchone()
    store.db.execute("DELETE FROM results WHERE key=?", (bf16_key,))
    rows, entry = store.count(), json.loads((run_dir / "manifest.json").read_text())["models"]
    said = []
    run_study(spec, run_dir, notify=said.append)  # the bf16 task is skipped, before computing; the rest goes on
    assert store.count() == rows
    skipped = [m for m in said if "lambada_passages: skipped" in m]
    assert (
        skipped and f"bfloat16 units computed with cpu-elsewhere arithmetic cannot be stored under {here}" in skipped[0]
    )
    assert json.loads((run_dir / "manifest.json").read_text())["models"] == entry  # its record kept as it was


def test_a_design_runs_only_on_the_tasks_it_names(tiny_dir, tmp_path):
    """`tasks` on a design: the block scan on LAMBADA only, single-layer repeats on both tasks, and on ARC-Easy
    the configurations LAMBADA selected; a derived design may not run where its parent does not."""
    from frankenlm.study.sizing import config_counts

    spec = tiny_spec(str(tiny_dir))
    spec.tasks.append(TaskBudget("arc_easy", search_items=12, heldout_items=6))
    spec.designs[0].tasks = ["lambada_passages"]  # repeat-block
    spec.designs[2].tasks = ["lambada_passages"]  # sublayer
    spec.designs.append(DesignSpec("selected", {"from_task": "lambada_passages", "top": 2}, ["arc_easy"]))
    spec.validate()
    assert json.loads(spec.to_json())["designs"][0]["tasks"] == ["lambada_passages"]
    assert "tasks" not in json.loads(spec.to_json())["designs"][1]
    run_dir = run_study(spec, tmp_path / "run")
    store = Store(run_dir / "results.sqlite")
    plans = {
        t: {p for (p,) in store.db.execute("SELECT plan FROM results WHERE task=?", (t,))}
        for t in ("lambada_passages", "arc_easy")
    }
    depth = 6
    layer_plans = {str(c.plan) for c in study_candidates(spec, depth, "arc_easy")}
    assert layer_plans == {str(c.plan) for c in designs.build("repeat-layer", spec.designs[1].args, depth)}
    picked = json.loads((run_dir / "manifest.json").read_text())["models"]
    (info,) = picked.values()
    selected = set(info["tasks"]["lambada_passages"]["heldout_plans"][:2])
    assert plans["arc_easy"] - {f"0..{depth - 1}"} <= layer_plans | selected
    assert selected <= plans["arc_easy"]  # LAMBADA's picks were measured on ARC-Easy
    blocks_only = {str(c.plan) for c in designs.build("repeat-block", spec.designs[0].args, depth)} - layer_plans
    assert blocks_only & plans["lambada_passages"] and blocks_only & plans["arc_easy"] <= selected
    assert sum(config_counts(spec, depth, "arc_easy")) < sum(config_counts(spec, depth, "lambada_passages"))

    bad = tiny_spec(str(tiny_dir))
    bad.tasks.append(TaskBudget("arc_easy", search_items=12, heldout_items=6))
    bad.designs[1].tasks = ["lambada_passages"]
    bad.designs.append(DesignSpec("damped", {"from": "repeat-layer", "top": 1}))
    with pytest.raises(FrankenError, match="design damped runs on arc_easy, where its parent design repeat-layer"):
        bad.validate()


def small_spec(model: str, **kw) -> StudySpec:
    spec = StudySpec(
        "small",
        [model],
        [TaskBudget("lambada_passages", search_tokens=600, heldout_tokens=200)],
        [DesignSpec("repeat-layer", {"layers": [1, 3], "max_repeats": 1})],
        dtype="float32",
        slices=2,
        early_stopping=None,
        heldout_top_k=1,
        fp32_top_k=0,
        batch_size=4,
        context_length=256,
    )
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


def test_every_phase_reports_progress(tiny_dir, tmp_path):
    """The sweep, each greedy-search step, the held-out check and the fp32 re-check each get a bar that is
    advanced unit by unit and then closed; messages go to `notify`."""
    spec = small_spec(
        str(tiny_dir),
        dtype="bfloat16",
        fp32_top_k=1,
        designs=[
            DesignSpec("repeat-layer", {"layers": [1, 3], "max_repeats": 1}),
            DesignSpec("search", {"candidates": 2, "steps": 2}),
        ],
    )
    bars, factory = recording_bars()
    messages: list[str] = []
    run_study(spec, tmp_path / "run", progress=factory, notify=messages.append)
    names = [b[0].split(" · ")[-1] for b in bars]
    assert names[0] == "search" and "greedy search step 1" in names
    assert names[-2:] == ["held-out", "fp32 re-check"]
    for desc, total, done, closed, _ in bars:
        assert closed and 0 <= done <= total, (desc, total, done)
    held = bars[names.index("held-out")]
    assert held[2] == held[1] == spec.heldout_top_k + 1  # base + top 1 on the held-out items
    fp32 = bars[-1]
    assert fp32[2] == fp32[1] == (spec.fp32_top_k + 1) * spec.slices
    assert any("held-out check" in m for m in messages) and any("fp32 re-check" in m for m in messages)

    # resumed: every phase again, its units all found stored, each counted once (not once per racing round)
    again, factory = recording_bars()
    run_study(spec, tmp_path / "run", progress=factory)
    assert [b[:2] for b in again] == [b[:2] for b in bars]
    for (desc, _, done, closed, stored), first in zip(again, bars, strict=True):
        assert closed and stored == done, desc
        # the first run's base units of a later phase were stored by an earlier one: the resumed bar counts
        # them, so it reaches at least as far
        assert done >= first[2], desc
    assert again[names.index("held-out")][2] == spec.heldout_top_k + 1


def recording_bars():
    """A progress factory recording [description, total, units done, closed, units found stored] per bar."""
    bars: list[list] = []

    def factory(description, total):
        bars.append([description, total, 0, False, 0])
        bar = bars[-1]

        def advance(desc, n, stored=False):
            if n < 0:
                bar[3] = True
            else:
                bar[2] += n
                bar[4] += n if stored else 0
                assert bar[2] <= bar[1], (description, bar)

        return advance

    return bars, factory


def test_runs_differing_in_context_length_do_not_share_rows(tiny_dir, tmp_path):
    store = tmp_path / "shared.sqlite"
    run_study(small_spec(str(tiny_dir), context_length=256), tmp_path / "a", store_path=store)
    n_a = Store(store).count()
    run_study(small_spec(str(tiny_dir), context_length=64), tmp_path / "b", store_path=store)
    db = Store(store).db
    assert Store(store).count() == 2 * n_a  # every unit computed again at the other context length
    base = f"0..{load_model(str(tiny_dir)).depth - 1}"
    pairs = db.execute("SELECT item_set, COUNT(*) FROM results WHERE plan=? GROUP BY item_set", (base,)).fetchall()
    assert pairs and all(n == 2 for _, n in pairs)
    rows = db.execute("SELECT items FROM results WHERE plan=? ORDER BY item_set, created", (base,)).fetchall()
    a, b = json.loads(rows[0][0]), json.loads(rows[1][0])
    assert [x["extras"]["nll"] for x in a] != [x["extras"]["nll"] for x in b]  # 64-token windows score differently


def test_a_layer_past_the_models_last_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    spec = small_spec(str(tiny_dir), designs=[DesignSpec("repeat-layer", {"layers": [6]})])
    with pytest.raises(FrankenError, match="layer 6 is out of range"):
        run_study(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_study_and_report_commands_write_the_report(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from frankenlm.cli.app import app

    spec = tmp_path / "spec.json"
    spec.write_text(small_spec(str(tiny_dir)).to_json())
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["study", "--spec", str(spec), "--out", str(out), "--threads", "1"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    assert "held-out check of the top 1" in r.output and (out / "report.html").exists()
    # not a terminal: each phase is plain lines (its start and its end), not a rich bar drawn only when done
    held = [
        line for line in r.output.splitlines() if line.startswith(f"{tiny_dir.name} · lambada_passages · held-out: ")
    ]
    assert held[0].endswith(": 0/2 units") and held[-1].split(": ")[1].startswith("2/2 units in "), r.output
    assert "━" not in r.output
    csv_before = (out / "results.csv").read_text()
    (out / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (out / "report.html").exists() and (out / "results.csv").read_text() == csv_before


def test_auto_batch_size_keys_units_by_the_size_it_chose(tiny_dir, tmp_path):
    """`batch_size: auto` is resolved before any unit is keyed: the units carry the size used (here the CPU's
    fixed size), so a run with that size given explicitly reuses them, and the results table is rebuilt from
    the manifest's record of it."""
    import dataclasses

    from frankenlm.eval.batching import CPU_BATCH_SIZE
    from frankenlm.study.runner import rewrite_results
    from frankenlm.study.store import Unit

    torch.set_num_threads(1)
    spec = tiny_spec(str(tiny_dir), early=False)
    spec.designs = [DesignSpec("repeat-layer", {"layers": [1], "max_repeats": 1})]
    spec.batch_size = "auto"
    run = run_study(spec, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["batch_sizes"].values()) == {CPU_BATCH_SIZE}
    fixed = Store.for_spec(run / "results.sqlite", dataclasses.replace(spec, batch_size=CPU_BATCH_SIZE))
    rows = fixed.rows()
    assert len(rows) >= 2 * spec.slices
    assert all(fixed.key(Unit(*r[1:6])) == r[0] for r in rows)
    table = (run / "results.csv").read_text()
    (run / "results.csv").unlink()
    rewrite_results(run)
    assert (run / "results.csv").read_text() == table


def test_order_tasks_runs_every_model_on_a_task_before_the_next_and_gives_the_same_results(tiny_dir, tmp_path):
    """`order: tasks` (every model through each task before the next task) computes the same units and writes
    the same results table as the default model-by-model loop; only the order of the work differs."""
    import dataclasses
    import shutil

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    other = tmp_path / "other-llama"  # a second model: the tiny one with its weights perturbed
    shutil.copytree(tiny_dir, other)
    m = AutoModelForCausalLM.from_pretrained(other)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    m.save_pretrained(other)
    spec = tiny_spec(str(tiny_dir), early=False)
    spec.models = [str(tiny_dir), str(other)]
    spec.tasks = [
        TaskBudget("lambada_passages", search_tokens=600, heldout_tokens=200),
        TaskBudget("arc_easy", search_items=12, heldout_items=6),
    ]
    spec.designs = [
        DesignSpec("repeat-layer", {"layers": [1, 4], "max_repeats": 1}),
        DesignSpec("damped", {"from": "repeat-layer", "top": 1, "scales": [0.5], "branches": ["both"]}),
    ]
    spec.dtype, spec.fp32_top_k = "bfloat16", 1  # by model: the fp32 re-check runs after a model's last task
    by_model = run_study(spec, tmp_path / "by-model")
    by_task = run_study(dataclasses.replace(spec, order="tasks"), tmp_path / "by-task")
    assert (by_model / "results.csv").read_text() == (by_task / "results.csv").read_text()
    a, b = Store(by_model / "results.sqlite"), Store(by_task / "results.sqlite")
    assert _all_items(a).keys() == _all_items(b).keys()
    tasks = [t for (t,) in b.db.execute("SELECT task FROM results WHERE dtype='bfloat16' ORDER BY created")]
    first_arc = tasks.index("arc_easy")
    assert "lambada_passages" not in tasks[first_arc:]  # both models finished LAMBADA before ARC began
    digests = [d for (d,) in b.db.execute("SELECT DISTINCT model_digest FROM results WHERE task='lambada_passages'")]
    assert len(digests) == 2
    assert b.db.execute("SELECT COUNT(*) FROM results WHERE dtype='float32'").fetchone()[0] > 0
    # by task: a task's fp32 re-checks come after every model's search of it, before the next task begins
    created = b.db.execute("SELECT task, dtype, created FROM results").fetchall()
    for task in ("lambada_passages", "arc_easy"):
        fp32 = [t for k, d, t in created if k == task and d == "float32"]
        assert fp32 and min(fp32) > max(t for k, d, t in created if k == task and d == "bfloat16")
    lambada_fp32 = max(t for k, d, t in created if k == "lambada_passages" and d == "float32")
    assert lambada_fp32 < min(t for k, d, t in created if k == "arc_easy")


def test_only_the_configurations_the_protocol_re_measured_have_held_out_results(tiny_dir, tmp_path):
    """A held-out unit of a configuration outside the protocol's top (left in the store by another selection,
    e.g. an earlier session's) stays out of the held-out family: no held-out gain, no confirmation."""
    import csv

    from frankenlm.study.runner import rewrite_results
    from frankenlm.study.store import Unit, item_set_digest

    torch.set_num_threads(1)
    spec = tiny_spec(str(tiny_dir), early=False)
    run = run_study(spec, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    ((_, info),) = manifest["models"].items()
    t = info["tasks"]["lambada_passages"]
    outsider = next(c["plan"] for c in info["configs"] if c["plan"] not in t["heldout_plans"])
    store = Store.for_spec(run / "results.sqlite", spec)
    held = item_set_digest("lambada_passages", t["heldout"])
    base_held = store.get(Unit(info["digest"], f"0..{info['depth'] - 1}", "lambada_passages", held, spec.dtype))
    store.put(Unit(info["digest"], outsider, "lambada_passages", held, spec.dtype), base_held)
    store.close()
    rewrite_results(run)
    rows = {r["config"]: r for r in csv.DictReader(open(run / "results.csv"))}
    assert rows[outsider]["heldout_gain"] in ("", "nan")
    assert all(rows[p]["heldout_gain"] not in ("", "nan") for p in t["heldout_plans"])


def test_every_task_races_its_own_derived_variants(tiny_dir, tmp_path):
    """A derived design's variants are raced on every task, also when an earlier task already proposed the same
    ones (they were dropped as 'known', so the second task's healed variants and held-out top silently
    differed from the protocol)."""
    torch.set_num_threads(1)
    spec = tiny_spec(str(tiny_dir), early=False)
    spec.tasks = [
        TaskBudget("lambada_passages", search_tokens=600, heldout_tokens=200),
        TaskBudget("arc_easy", search_items=12, heldout_items=6),
    ]
    spec.designs = [
        DesignSpec("repeat-layer", {"layers": [1], "max_repeats": 1}),
        DesignSpec("damped", {"from": "repeat-layer", "top": 1, "scales": [0.5], "branches": ["both"]}),
    ]
    run = run_study(spec, tmp_path / "run")
    ((_, info),) = json.loads((run / "manifest.json").read_text())["models"].items()
    damped = [c["plan"] for c in info["configs"] if c["design"] == "damped"]
    assert damped
    store = Store.for_spec(run / "results.sqlite", spec)
    for task in ("lambada_passages", "arc_easy"):
        have = {p for (p,) in store.db.execute("SELECT DISTINCT plan FROM results WHERE task=?", (task,))}
        assert set(damped) <= have, task


def test_selected_design_measures_another_tasks_selection(tiny_dir, tmp_path, monkeypatch):
    """`selected` runs the configurations another task selected (its held-out-checked top) on this task's search
    items: LAMBADA's top on ARC at once, ARC's top on LAMBADA once ARC has run (the next session's walk); the
    findings document reports LAMBADA's selection on ARC with ARC's own numbers for it."""
    import csv

    from frankenlm.report.findings import findings_markdown
    from frankenlm.study import runner
    from frankenlm.study.store import item_set_digest

    torch.set_num_threads(1)

    def fixed_parent(store, lm, items, dtype, seen, cands, top):  # LAMBADA's healed variants vary layer 4, ARC's 1
        want = 4 if items.task == "lambada_passages" else 1
        return [c for c in cands if c.params.get("layer") == want][:top]

    monkeypatch.setattr(runner, "best_of", fixed_parent)
    spec = tiny_spec(str(tiny_dir), early=False)
    spec.tasks = [
        TaskBudget("lambada_passages", search_tokens=600, heldout_tokens=200),
        TaskBudget("arc_easy", search_items=12, heldout_items=6),
    ]
    spec.designs = [
        DesignSpec("repeat-layer", {"layers": [1, 4], "max_repeats": 1}),
        DesignSpec("damped", {"from": "repeat-layer", "top": 1, "scales": [0.25, 0.5], "branches": ["both"]}),
        DesignSpec("selected", {"from_task": "lambada_passages", "top": 3}),
        DesignSpec("selected", {"from_task": "arc_easy", "top": 3}),
    ]
    spec.heldout_top_k = 3
    spec.validate()
    said: list[str] = []
    run = run_study(spec, tmp_path / "run", notify=said.append)
    assert any(m.endswith("lambada_passages: arc_easy has selected nothing for this model yet") for m in said)
    assert any(m.endswith("arc_easy: the 3 configurations lambada_passages selected") for m in said)

    def measured(task):
        ((_, info),) = json.loads((run / "manifest.json").read_text())["models"].items()
        store = Store.for_spec(run / "results.sqlite", spec)
        t = info["tasks"][task]
        slices = {item_set_digest(task, s) for s in t["slices"]}
        have: dict[str, set] = {}
        for plan, item_set in store.db.execute("SELECT plan, item_set FROM results WHERE task=?", (task,)):
            have.setdefault(plan, set()).add(item_set)
        store.close()
        return info, {p for p, sets in have.items() if slices <= sets}

    info, on_arc = measured("arc_easy")
    picks = info["tasks"]["lambada_passages"]["heldout_plans"]
    damped = {c["plan"]: c for c in info["configs"] if c["design"] == "damped"}
    # 3 of LAMBADA's 5 (2 plain repeats, 3 variants of layer 4): at least one is a variant ARC's design never made
    assert any(damped[p]["of"] == "0..4,4..5" for p in picks if p in damped)
    assert set(picks) <= on_arc  # on every ARC search slice
    arc_picks = info["tasks"]["arc_easy"]["heldout_plans"]
    _, on_lambada = measured("lambada_passages")
    assert not set(arc_picks) <= on_lambada or not any(damped.get(p, {}).get("of") == "0..1,1..5" for p in arc_picks)
    run_study(spec, tmp_path / "run")  # the next session: ARC has selected now
    _, on_lambada = measured("lambada_passages")
    assert set(arc_picks) <= on_lambada
    # the document: LAMBADA's selection on ARC, with ARC's numbers for each
    rows = {r["config"]: r for r in csv.DictReader(open(run / "results.csv")) if r["task"] == "arc_easy"}
    text = findings_markdown([run])
    for k, p in enumerate(picks, 1):
        line = next(x for x in text.splitlines() if x.startswith("- ") and f"lambada_passages's #{k} `{p}`" in x)
        g = float(rows[p]["gain"]) * 100
        assert f"on arc_easy: {g:+.2f} [" in line, line
