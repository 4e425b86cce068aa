"""Tests for frankenlm.report on synthetic run directories built with the real results schema
(frankenlm.study.results.ResultRow, Holm/BH by frankenlm.study.analysis.adjust_pvalues, written by the one CSV
writer), plus a headless-Chromium render check."""

from __future__ import annotations

import base64
import csv
import html as htmllib
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from frankenlm.model.plan import identity_plan, repeat_block_plan, repeat_layer_plan
from frankenlm.report import TOP_N, write_report
from frankenlm.study.analysis import adjust_pvalues
from frankenlm.study.results import NAN, RESULT_COLUMNS, ResultRow, read_results, write_csv

COLUMNS = RESULT_COLUMNS
A, B = "smollm2-135m", "smollm2-360m"
LAYERS = (5, 12, 17, 25)


# --------------------------------------------------------------------------------------- synthetic runs


def _p(gain: float, half: float) -> float:
    z = abs(gain) / (half / 1.96) if half > 0 else 0.0
    return math.erfc(z / math.sqrt(2))


class Run:
    """Builds results.csv rows the way the analysis does (paired CIs, Holm per model × task)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.params: dict[str, dict[str, dict]] = {}

    def base(self, model: str, depth: int, task: str, metric: str, hib: bool, value: float) -> None:
        self.rows.append(
            dict(
                model=model,
                depth=depth,
                config=str(identity_plan(depth)),
                design="base",
                sublayer="block",
                task=task,
                metric=metric,
                higher_is_better=int(hib),
                base_value=value,
                value=value,
                n_items=500,
                n_tokens=200_000,
                stopped_early=0,
                extra_flops_per_token=0.0,
                flops_ratio=1.0,
                effective_params=135e6,
                kv_bytes_per_token=depth * 2 * 3 * 64 * 2,
            )
        )

    def add(
        self,
        model,
        depth,
        task,
        metric,
        hib,
        plan,
        design,
        extra_layers,
        gain,
        half,
        *,
        stopped=False,
        heldout=None,
        fp32=None,
        **params,
    ) -> None:
        base_value = 1.0 if metric == "bits_per_byte" else 0.4
        value = base_value + (gain if hib else -gain)
        row = dict(
            model=model,
            depth=depth,
            config=str(plan),
            design=design,
            sublayer="block",
            task=task,
            metric=metric,
            higher_is_better=int(hib),
            base_value=base_value,
            value=value,
            gain=gain,
            ci_low=gain - half,
            ci_high=gain + half,
            p_value=_p(gain, half),
            n_items=100 if stopped else 500,
            n_tokens=40_000 if stopped else 200_000,
            stopped_early=int(stopped),
            extra_flops_per_token=extra_layers * 7e6,
            flops_ratio=1 + extra_layers / depth,
            effective_params=135e6 + extra_layers * 3.5e6,
            kv_bytes_per_token=(depth + extra_layers) * 2 * 3 * 64 * 2,
            export_command=f"frankenlm export --model {model} --plan '{plan}' --format hf --out exports/x",
        )
        extra = params.pop("extra_params", {})
        row.update(params)
        self.params.setdefault(model, {})[str(plan)] = {**params, **extra}
        if heldout is not None:
            hg, hh = heldout
            row.update(heldout_gain=hg, heldout_ci_low=hg - hh, heldout_ci_high=hg + hh, heldout_p=_p(hg, hh))
        if fp32 is not None:
            row["fp32_gain"] = fp32
        self.rows.append(row)

    def block(self, model, depth, task, metric, hib, i, j, gain, half, **kw):
        self.add(
            model,
            depth,
            task,
            metric,
            hib,
            repeat_block_plan(i, j, depth),
            "repeat-block",
            j - i + 1,
            gain,
            half,
            i=i,
            j=j,
            repeats=1,
            **kw,
        )

    def layer(self, model, depth, task, metric, hib, k, r, gain, half, **kw):
        self.add(
            model,
            depth,
            task,
            metric,
            hib,
            repeat_layer_plan(k, depth, extra=r),
            "repeat-layer",
            r,
            gain,
            half,
            layer=k,
            repeats=r,
            **kw,
        )

    def sub(self, model, depth, task, metric, hib, k, s, gain, half, **kw):
        self.add(
            model,
            depth,
            task,
            metric,
            hib,
            repeat_layer_plan(k, depth, 1, sublayer=s),
            "sublayer",
            0.5,
            gain,
            half,
            layer=k,
            repeats=1,
            sublayer=s,
            **kw,
        )

    def write(self, run_dir: Path, study: dict | None) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        typed = [ResultRow.from_record(r, self.params.get(r["model"], {}).get(r["config"], {})) for r in self.rows]
        groups: dict[tuple, list[ResultRow]] = {}
        for r in typed:
            groups.setdefault((r.model, r.task), []).append(r)
        write_csv([r for rs in groups.values() for r in adjust_pvalues(rs)], run_dir / "results.csv")
        if study is not None:
            (run_dir / "study.json").write_text(json.dumps({**study, "design_params": self.params}))
        return run_dir


def _study(models, tasks) -> dict:
    return {
        "preset": "synthetic",
        "dtype": "bfloat16",
        "models": [{"name": m, "depth": d, "params": 135e6 if d == 30 else 362e6} for m, d in models],
        "tasks": [
            {
                "name": t,
                "primary_metric": m,
                "higher_is_better": hib,
                "search_items": 500,
                "heldout_items": 300,
                "search_tokens": 200_000,
            }
            for t, m, hib in tasks
        ],
        "designs": ["repeat-block", "repeat-layer", "sublayer"],
        "started": "2026-11-27T00:00:00",
        "finished": "2026-11-27T01:12:30",
        "timings": {"smollm2-135m/search+heldout": 3600.5, "total": 4350.0},
        "command": "frankenlm study --preset synthetic --model smollm2-135m --out runs/x",
        "early_stopping": {"slices": 4, "alpha": 0.01},
    }


def _surface(i: int, j: int) -> float:
    """Synthetic bits-per-byte gain: good near layer 17 for short blocks, bad for long blocks and layers 0-2."""
    c, length = (i + j) / 2, j - i + 1
    return 0.006 * math.exp(-(((c - 17) / 2.5) ** 2)) - 0.0004 * length - (0.02 if i < 3 else 0.0)


def rich_run(run_dir: Path) -> Path:
    run, D = Run(), 30
    bpb = ("wikitext", "bits_per_byte", False)
    run.base(A, D, *bpb, 1.0)
    block_rows = []
    for i in range(D):
        for j in range(i, D):
            if i == j and i in LAYERS:
                continue  # deduplicated: the same plan is the repeat-layer r=1 row
            if (i, j) == (5, 6):  # early-stopped outlier with the largest (noisy) gain: never in the top table
                run.block(A, D, *bpb, i, j, 0.05, 0.04, stopped=True)
                continue
            g = _surface(i, j)
            long_ = j - i + 1 > 20
            block_rows.append((i, j, g, long_))
    ranked = sorted([(g, i, j) for i, j, g, s in block_rows if not s], reverse=True)
    heldout = {(i, j) for _, i, j in ranked[:6]}
    for i, j, g, long_ in block_rows:
        kw = {}
        if (i, j) in heldout:
            kw = {"heldout": (g * 0.6, 0.0012), "fp32": g + 0.0001}
        run.block(A, D, *bpb, i, j, g if not long_ else g - 0.01, 0.006 if long_ else 0.0012, stopped=long_, **kw)
    curves = {
        5: [-0.001, -0.003, -0.006],
        12: [0.0005, -0.001, -0.004],
        17: [0.004, 0.0055, 0.005],
        25: [-0.0005, -0.002, -0.0035],
    }
    for k, gains in curves.items():
        for r, g in enumerate(gains, 1):
            run.layer(A, D, *bpb, k, r, g, 0.0012, **({"heldout": (g * 0.6, 0.0012)} if k == 17 else {}))
        run.sub(A, D, *bpb, k, "attn", gains[0] * 0.5, 0.0012)
        run.sub(A, D, *bpb, k, "mlp", gains[0] * 0.8 - 0.0005, 0.0012)
    # a second task on the same model: repeat-layer only (no blocks, no sublayers)
    hs = ("hellaswag", "acc_norm", True)
    run.base(A, D, *hs, 0.40)
    for k in LAYERS:
        for r in (1, 2, 3):
            run.layer(A, D, *hs, k, r, 0.002 - 0.003 * r, 0.01)
    # a second, deeper model on the bits-per-byte task: stride-2 blocks and a few repeat-layer curves
    D2 = 32
    run.base(B, D2, *bpb, 0.9)
    for i in range(0, D2, 2):
        for j in range(i, D2, 2):
            run.block(B, D2, *bpb, i, j, _surface(i * 30 / 32, j * 30 / 32) * 0.7, 0.001)
    for k in (6, 13, 18, 27):
        for r in (1, 2):
            run.layer(B, D2, *bpb, k, r, 0.002 - 0.0015 * r, 0.001)
    study = _study([(A, D), (B, D2)], [bpb, hs])
    study["tasks"][1]["dtype"] = "float32"  # a task in its own dtype (the others are in the study's)
    return run.write(run_dir, study)


def null_run(run_dir: Path, winner: tuple[float, float] | None = None) -> Path:
    """One model, one task; every CI includes 0 — unless `winner` = (search gain, held-out gain) for layer 17."""
    run, D, rng = Run(), 30, np.random.default_rng(0)
    bpb = ("wikitext", "bits_per_byte", False)
    run.base(A, D, *bpb, 1.0)
    for i in range(0, D, 3):
        for j in range(i, D, 3):
            run.block(A, D, *bpb, i, j, float(rng.normal(0, 0.0004)), 0.003, heldout=(0.0, 0.003))
    for k in LAYERS:
        for r in (1, 2):
            if winner and (k, r) == (17, 1):
                run.layer(A, D, *bpb, k, r, winner[0], 0.002, heldout=(winner[1], 0.002))
            else:
                run.layer(A, D, *bpb, k, r, float(rng.normal(0, 0.0004)), 0.003)
    return run.write(run_dir, _study([(A, D)], [bpb]))


def _answers(html: str) -> str:
    """The answers section as plain text, one line per answer bullet."""
    m = re.search(r'<section id="answers">(.*?)</section>', html, re.S)
    assert m, "no answers section"
    items = re.findall(r"<li>(.*?)</li>", m.group(1), re.S)
    return "\n".join(htmllib.unescape(re.sub(r"<[^>]+>", "", li)) for li in items)


def _figure_ids(html: str) -> list[str]:
    return re.findall(r'<figure id="fig-([^"]+)">', html)


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> tuple[Path, str]:
    run_dir = rich_run(tmp_path_factory.mktemp("rich"))
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    return run_dir, out.read_text()


def test_report_is_self_contained(rich) -> None:
    run_dir, html = rich
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\' >]+)', html, re.I)
    assert refs, "expected embedded images and anchors"
    assert not [r for r in refs if not (r.startswith("data:image/png;base64,") or r.startswith("#"))]
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html


def test_expected_figures_present_and_embedded(rich) -> None:
    run_dir, html = rich
    a, a_hs, b = "smollm2-135m-wikitext", "smollm2-135m-hellaswag", "smollm2-360m-wikitext"
    expected = {
        f"{a}_heatmap",
        f"{a}_repeat_layer",
        f"{a}_sublayer",
        f"{a}_cost",
        f"{a_hs}_repeat_layer",
        f"{a_hs}_cost",
        f"{b}_heatmap",
        f"{b}_repeat_layer",
        f"{b}_cost",
        "sizes_wikitext",
    }
    ids = _figure_ids(html)
    assert sorted(ids) == sorted(expected)
    imgs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == len(expected) == len(html.split("<img ")) - 1
    files = {p.stem: p.read_bytes() for p in (run_dir / "figures").glob("*.png")}
    assert set(files) == expected
    for name, b64 in zip(ids, imgs):
        data = base64.b64decode(b64)
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data == files[name]
    # designs that were not run are named, not drawn
    assert "The repeat-block design wasn't run for smollm2-135m · hellaswag" in html
    assert "The sublayer design wasn't run for smollm2-360m · wikitext" in html
    # table CSVs
    tables = {p.name for p in (run_dir / "tables").glob("*.csv")}
    assert {"models.csv", "tasks.csv", "summary.csv", f"top_{a}.csv", f"top_{a_hs}.csv", f"top_{b}.csv"} <= tables


def test_header(rich) -> None:
    _, html = rich
    head = html.split('<section id="answers">')[0]
    for s in (
        "smollm2-135m",
        "smollm2-360m",
        "wikitext",
        "hellaswag",
        "bfloat16 (float32: hellaswag)",
        "1 h 12 min",
        "frankenlm study --preset synthetic",
        "200 ktokens",
    ):
        assert s in head, s


def test_top_table_sorted_without_early_stopped(rich) -> None:
    run_dir, html = rich
    with open(run_dir / "results.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["model"] == A and r["task"] == "wikitext" and r["design"] != "base"]
    eligible = sorted((r for r in rows if r["stopped_early"] == "0"), key=lambda r: (-float(r["gain"]), r["config"]))
    with open(run_dir / "tables" / "top_smollm2-135m-wikitext.csv") as fh:
        top = list(csv.DictReader(fh))
    assert len(top) == TOP_N
    assert [t["config"] for t in top] == [r["config"] for r in eligible[:TOP_N]]
    gains = [float(t["gain"]) for t in top]
    assert gains == sorted(gains, reverse=True)
    stopped = {r["config"] for r in rows if r["stopped_early"] == "1"}
    assert str(repeat_block_plan(5, 6, 30)) in stopped and not stopped & {t["config"] for t in top}
    assert all(t["export_command"].startswith("frankenlm export") for t in top)
    # held-out columns and the winner's-curse line
    first = top[0]
    assert float(first["shrinkage"]) == pytest.approx(float(first["gain"]) - float(first["heldout_gain"]))
    assert "Winner's curse: across the 9 configurations re-measured on held-out items" in html


def test_rich_answers(rich) -> None:
    _, html = rich
    ans = _answers(html)
    # the confirmed configurations all repeat layers around 17
    line = next(s for s in ans.split("\n") if "smollm2-135m · wikitext" in s and "improve" in s)
    assert "confirmed on held-out items" in line and "layer 17" in line
    assert "No configuration improves acc_norm significantly on the search items" in ans  # hellaswag: all null/worse
    assert "its best count is r = 2, and r = 3 stays within its CI" in ans
    assert "diminishing returns" in ans
    assert "threshold at layer 3" in ans
    assert "Does it depend on model size?" in html and "smollm2-360m (32 layers)" in ans
    assert "zero extra parameter bytes" in ans


def test_block_cells_filled_from_equivalent_plans(rich) -> None:
    run_dir, _ = rich
    g = next(g for g in read_results(run_dir).groups() if g.model == A and g.task == "wikitext")
    # the sweep deduplicated block (17, 17) into the repeat-layer row: found from its design parameters
    assert not any(r.design == "repeat-block" and (r.i, r.j) == (17, 17) for r in g.rows)
    assert g.block(17, 17) is g.layer_rep(17, 1) is not None and g.sub(17, "block") is g.layer_rep(17, 1)
    assert g.block(17, 17).design == "repeat-layer"


def test_null_study_says_no_configuration(tmp_path) -> None:
    html = write_report(null_run(tmp_path)).read_text()
    ans = _answers(html)
    assert "No configuration improves bits_per_byte significantly on the search items" in ans
    assert " improve " not in ans.replace("No configuration improves", "")
    assert "confirmed on held-out" not in ans and "0 confirmed" in html


def test_single_winner_is_named(tmp_path) -> None:
    html = write_report(null_run(tmp_path, winner=(0.012, 0.009))).read_text()
    ans = _answers(html)
    assert "1 configuration of" in ans and "improves bits_per_byte" in ans
    assert "The best by held-out gain is repeat layer 17 (+1 copy)" in ans
    assert "layer 17" in ans and "layer 5 " not in ans


def test_winner_that_fails_held_out(tmp_path) -> None:
    html = write_report(null_run(tmp_path, winner=(0.012, 0.0005))).read_text()
    ans = _answers(html)
    assert "the only one re-measured on held-out items does not survive the held-out check" in ans
    assert "No improvement is confirmed" in ans
    assert "improves bits_per_byte (significant" not in ans


def test_deterministic_pure_and_torch_free(tmp_path) -> None:
    run_dir = null_run(tmp_path / "run")
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "stale.png").write_bytes(b"old")
    code = (
        "import sys; from pathlib import Path; from frankenlm.report import write_report; "
        f"write_report(Path({str(run_dir)!r})); print('torch' in sys.modules)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False", "the report must not import torch (it never loads a model)"
    first = (run_dir / "report.html").read_bytes()
    assert not (run_dir / "figures" / "stale.png").exists()
    write_report(run_dir)
    assert (run_dir / "report.html").read_bytes() == first


def test_empty_cells_and_missing_study(tmp_path) -> None:
    run_dir = tmp_path / "sparse"
    run_dir.mkdir()
    nan = math.nan
    rows = [
        ResultRow(A, 30, "0..29", "base", task="t", metric="acc", higher_is_better=True, base_value=0.5, value=0.5),
        ResultRow(
            A,
            30,
            "0..7,7..29",
            "repeat-layer",
            layer=7,
            repeats=1,
            task="t",
            metric="acc",
            higher_is_better=True,
            gain=nan,
        ),
        ResultRow(A, None, "0..3,2..29", "custom", task="t", metric="acc", higher_is_better=True, gain=0.01),
        ResultRow(
            A,
            30,
            "not a plan",
            "search",
            task="t",
            metric="acc",
            higher_is_better=True,
            gain=-0.02,
            ci_low=-0.03,
            ci_high=-0.01,
            p_value=0.001,
            flops_ratio=1.1,
        ),
    ]
    write_csv(adjust_pvalues(rows), run_dir / "results.csv")
    html = write_report(run_dir).read_text()
    assert "study.json is missing" in html
    assert "The repeat-block design wasn't run" in html and "The sublayer design wasn't run" in html
    assert "No configuration improves acc significantly on the search items" in html
    # header-only results.csv: still a page
    empty = tmp_path / "empty"
    empty.mkdir()
    write_csv([], empty / "results.csv")
    assert "results.csv holds no rows" in write_report(empty).read_text()


def test_missing_results_is_a_user_error(tmp_path) -> None:
    from frankenlm.errors import FrankenError

    with pytest.raises(FrankenError, match="results.csv"):
        write_report(tmp_path)


# ------------------------------------------------------------------------------- headless Chromium check

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _CDP:
    """A minimal Chrome DevTools Protocol client over a stdlib websocket (RFC 6455, text frames only)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: "
            f"Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.f = self.sock.makefile("rb")
        status = self.f.readline()
        assert b" 101 " in status, status
        while self.f.readline() not in (b"\r\n", b""):
            pass
        self.next_id, self.events = 0, []

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (
            bytes([0x80 | n])
            if n < 126
            else bytes([0xFE]) + n.to_bytes(2, "big")
            if n < 65536
            else bytes([0xFF]) + n.to_bytes(8, "big")
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> dict:
        chunks = []
        while True:
            b0, b1 = self.f.read(2)
            n = b1 & 0x7F
            n = int.from_bytes(self.f.read(2 if n == 126 else 8), "big") if n >= 126 else n
            chunks.append(self.f.read(n))
            if b0 & 0x80 and (b0 & 0x0F) in (0, 1):
                return json.loads(b"".join(chunks))

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, since: int = 0, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events[since:]):
            assert time.monotonic() < end, f"timed out waiting for {method}"
            self.events.append(self._recv())


def _console_errors(events: list[dict]) -> list[str]:
    errs = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            errs.append(json.dumps(p.get("exceptionDetails", {}))[:300])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errs.append(json.dumps(p.get("args"))[:300])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errs.append(p["entry"].get("text", "")[:300])
    return errs


def _chromium() -> Path:
    """Chromium's path; a missing browser skips the test locally but FAILS it when the CI variable is set."""
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return Path(found)
    if "CI" not in os.environ:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium); CI requires it")
    pytest.fail("Chromium (/usr/bin/chromium, Debian package 'chromium') is required in CI but is missing")


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        _chromium()


def test_report_renders_in_chromium(rich, tmp_path) -> None:
    exe = _chromium()
    run_dir, _ = rich
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            str(exe),
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "--window-size=1280,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file, end = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < end, "Chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/json/list")
        page = next(t for t in json.loads(conn.getresponse().read()) if t["type"] == "page")
        cdp = _CDP(port, "/devtools/page/" + page["id"])
        for domain in ("Runtime", "Log", "Page"):
            cdp.call(f"{domain}.enable")
        since = len(cdp.events)
        cdp.call("Page.navigate", url=(run_dir / "report.html").resolve().as_uri())
        cdp.wait_for("Page.loadEventFired", since)
        imgs = json.loads(
            cdp.call(
                "Runtime.evaluate",
                returnByValue=True,
                expression=(
                    "JSON.stringify(Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]))"
                ),
            )["result"]["value"]
        )
        assert len(imgs) == 10
        assert all(c and w > 0 and h > 0 for c, w, h in imgs), imgs
        shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        out = Path(os.environ.get("FRANKENLM_REPORT_SCREENSHOT", tmp_path / "report.png"))
        out.write_bytes(base64.b64decode(shot))
        assert out.read_bytes().startswith(b"\x89PNG")
        cdp.call("Runtime.evaluate", expression="1")  # drain late events
        assert _console_errors(cdp.events) == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ------------------------------------------------------------------------- schema, heatmap scale, damped repeats


def test_results_round_trip_is_exact(rich, tmp_path) -> None:
    """The one reader gives back the rows the writer was given: writing them again gives the same bytes."""
    run_dir, _ = rich
    res = read_results(run_dir)
    again = write_csv(res.rows, tmp_path / "results.csv")
    assert again.read_bytes() == (run_dir / "results.csv").read_bytes()
    assert read_csv_rows(again, res.study) == res.rows
    # the verdicts travel with the row (independent truth: the synthetic run's construction)
    g = next(g for g in res.groups() if g.model == A and g.task == "wikitext")
    r17 = g.layer_rep(17, 1)
    assert r17.better and r17.confirmed and r17.params == {"layer": 17, "repeats": 1}
    stopped = g.block(5, 6)
    assert stopped.stopped_early and stopped not in g.ranked
    full = [r for r in g.rows if not r.stopped_early]
    assert len(g.ranked) == len(full) and [r.gain for r in g.ranked] == sorted((r.gain for r in full), reverse=True)


def read_csv_rows(path: Path, study: dict) -> list[ResultRow]:
    from frankenlm.study.results import read_csv

    return read_csv(path, study.get("design_params"))


def test_verdicts_from_the_numbers() -> None:
    def row(**kw):
        return ResultRow(A, 30, "0..3,3..29", "custom", task="t", metric="acc", higher_is_better=True, **kw)

    assert row(gain=0.02, ci_low=0.01, ci_high=0.03, significant=True).better
    assert not row(gain=0.02, ci_low=-0.01, ci_high=0.05, significant=True).better  # CI includes 0
    assert not row(gain=0.02, ci_low=0.01, ci_high=0.03, significant=False).better  # not Holm-significant
    assert row(gain=-0.02, ci_low=-0.03, ci_high=-0.01, significant=True).worse
    ok = row(gain=0.02, ci_low=0.01, ci_high=0.03, significant=True, heldout_gain=0.01, heldout_ci_low=0.002)
    assert ok.confirmed and ok.remeasured
    assert not row(
        gain=0.02, ci_low=0.01, ci_high=0.03, significant=True, heldout_gain=0.01, heldout_ci_low=-0.002
    ).confirmed
    assert row(gain=0.02, ci_low=0.01, ci_high=0.03, fp32_gain=0.021).fp32_agrees is True
    assert row(gain=0.02, ci_low=0.01, ci_high=0.03, fp32_gain=-0.02).fp32_agrees is False
    assert row(gain=0.02).fp32_agrees is None
    assert row(flops_ratio=1.25).extra_flops_pct == pytest.approx(25.0)
    assert row().repeated_layers == (3,)  # from the plan text when the design has no layer parameters


def test_held_out_p_values_are_holm_adjusted_over_the_re_measured_family() -> None:
    """Held-out p-values form their own Holm family (the configurations re-measured, counted as at least the
    protocol's top k); `heldout_better` follows from the adjusted p, whatever the search verdict."""

    def row(config, p, held_p=NAN, held=(0.03, 0.01)):
        g, lo = held if held_p == held_p else (NAN, NAN)
        return ResultRow(A, 30, config, "custom", task="t", metric="acc", higher_is_better=True, gain=0.01,
                         ci_low=-0.01, ci_high=0.03, p_value=p, heldout_gain=g, heldout_ci_low=lo,
                         heldout_ci_high=g + 0.02, heldout_p=held_p)  # fmt: skip

    base = ResultRow(A, 30, "0..29", "base", task="t", metric="acc", higher_is_better=True)
    rows = [base, row("a", 0.5, 0.01), row("b", 0.6, 0.04), row("c", 0.01), row("d", 0.7, 0.03, (-0.02, -0.04))]
    out = {r.config: r for r in adjust_pvalues(rows, heldout_family=3)}
    assert out["0..29"] == base  # the base row is returned unchanged
    # by hand, m = 3 re-measured: sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 0.04)
    assert [out[k].heldout_p_holm for k in "abd"] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(out["c"].heldout_p_holm)  # not re-measured: no held-out test
    assert [out[k].heldout_better for k in "abcd"] == [True, False, False, False]  # d is significantly *worse*
    assert not any(out[k].significant or out[k].confirmed for k in "abd")  # search: none Holm-significant
    # a check still running (2 of the protocol's 5 re-measured) is adjusted as 5 tests: 5 x 0.01 = 0.05
    part = {r.config: r for r in adjust_pvalues(rows[:3], heldout_family=5)}
    assert part["a"].heldout_p_holm == pytest.approx(0.05) and not part["a"].heldout_better
    assert adjust_pvalues(rows[:3])[1].heldout_p_holm == pytest.approx(0.02)  # family of the 2 there are


def _cell_colours(fig) -> np.ndarray:
    """RGBA of every heatmap cell (the gain image is the second image on the axes)."""
    im = fig.axes[0].images[1]
    return im.to_rgba(im.get_array())


def test_heatmap_scale_survives_one_catastrophic_block(tmp_path) -> None:
    from frankenlm.report.figures import fig_heatmap, robust_limits

    run, D = Run(), 12
    bpb = ("wikitext", "bits_per_byte", False)
    run.base(A, D, *bpb, 1.0)
    gains = {}
    for i in range(0, D, 2):
        for j in range(i, D, 2):
            gains[(i, j)] = -0.002 * (j - i) + 0.001 * (i % 4)
    gains[(0, 10)] = -5.0  # one catastrophic block
    for (i, j), gain in gains.items():
        run.block(A, D, *bpb, i, j, gain, 0.0005)
    g = read_results(run.write(tmp_path, _study([(A, D)], [bpb]))).groups()[0]
    fig = fig_heatmap(g)
    rgba = _cell_colours(fig)
    starts, ends = list(range(0, D, 2)), list(range(0, D, 2))
    colour = {(i, j): rgba[starts.index(i), ends.index(j)] for (i, j) in gains}
    # cells whose gains differ by a few thousandths get clearly different colours despite the -5.0 outlier
    for a, b in (((0, 2), (0, 8)), ((2, 2), (0, 0)), ((4, 6), (4, 10))):
        assert gains[a] != gains[b]
        assert np.abs(colour[a][:3] - colour[b][:3]).max() > 0.08, (a, b, colour[a], colour[b])
    # the outlier is clipped (end colour) and marked, and the colour bar says so
    marked = [c for c in fig.axes[0].collections if c.get_gid() == "clipped"]
    assert len(marked) == 1 and marked[0].get_offsets().tolist() == [[ends.index(10), starts.index(0)]]
    assert "clipped" in fig.axes[1].get_ylabel()
    # without the outlier nothing is clipped
    assert robust_limits([g for k, g in gains.items() if k != (0, 10)])[0] == min(
        g for k, g in gains.items() if k != (0, 10)
    )


def _damped_run(tmp_path: Path) -> Path:
    run, D = Run(), 30
    bpb = ("wikitext", "bits_per_byte", False)
    run.base(A, D, *bpb, 1.0)
    run.layer(A, D, *bpb, 12, 1, -0.004, 0.001)  # the plain repeat: scale 1
    for k, best in ((12, 0.5), (20, 0.7)):
        for s in (0.3, 0.5, 0.7, 0.9):
            gain = 0.006 - 0.02 * (s - best) ** 2
            plan = f"0..{k},{k}@{s:g},{k + 1}..29"
            run.add(
                A,
                D,
                *bpb,
                plan,
                "damped",
                s,
                gain,
                0.001,
                heldout=(gain * 0.8, 0.001) if s == best else None,
                extra_params={"layer": k, "scale": s, "branch": "both", "of": f"0..{k},{k},{k + 1}..29"},
            )
    for s in (0.5, 1.5):
        run.add(
            A,
            D,
            *bpb,
            f"0..20,20.attn@{s:g},21..29",
            "damped",
            0.5,
            -0.001 * s,
            0.001,
            extra_params={"layer": 20, "scale": s, "branch": "attn", "of": "0..20,20.attn,21..29"},
        )
    return run.write(tmp_path, _study([(A, D)], [bpb]))


def test_damped_repeats_figure_and_answer(tmp_path) -> None:
    from frankenlm.report.figures import scale_series

    run_dir = _damped_run(tmp_path)
    g = read_results(run_dir).groups()[0]
    series = scale_series(g)
    assert set(series) == {("layer 12", "both"), ("layer 20", "both"), ("layer 20", "attn")}
    # the plain repeat of layer 12 joins its series at scale 1, found from design parameters
    assert [s for s, _ in series[("layer 12", "both")]] == [0.3, 0.5, 0.7, 0.9, 1.0]
    assert series[("layer 12", "both")][-1][1].design == "repeat-layer"
    html = write_report(run_dir).read_text()
    assert "smollm2-135m-wikitext_scales" in _figure_ids(html)
    ans = _answers(html)
    assert "Does scaling the repeated copy help?" in html
    line = next(s for s in ans.split("\n") if "damped repeat" in s)
    assert "10 damped repeats in 3 series" in line
    assert "layer 12: best scale 0.5" in line and "(confirmed)" in line and "vs the plain repeat's" in line
    assert "layer 20 (attn only): best scale 0.5" in line
    assert "layer 20: best scale 0.7" in line


def test_no_stale_racing_text(rich) -> None:
    _, html = rich
    assert "first slice" not in html
    assert "any slice but the last" in html
