"""Checks of command-line values, run before any model is loaded. Each raises `FrankenError` with one line that
names the option, the value given and what would be right (the CLI prints it and exits with status 2).

Shared by every command: `check_threads` (any `--threads`), `check_positive`, `task_names` (with the closest
valid name suggested for a typo), `writable_file` (e.g. `--json`), `check_prompt`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from frankenlm.errors import FrankenError

MAX_THREADS = 1024


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    """`threads` unchanged if None (torch's default) or a positive count, else a one-line refusal."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise FrankenError(
            f"{option} {threads!r}: give a positive number of CPU threads (e.g. {os.cpu_count() or 1}"
            f" on this machine), or leave it out for torch's default"
        )
    if threads > MAX_THREADS:
        raise FrankenError(
            f"{option} {threads}: at most {MAX_THREADS} threads (this machine has {os.cpu_count()} CPUs)"
        )
    return threads


def check_positive(value: int | None, option: str, what: str, maximum: int | None = None) -> int | None:
    """`value` unchanged if None or in [1, maximum], else a one-line refusal naming `option` and `what` it counts."""
    if value is None:
        return None
    if value < 1 or (maximum is not None and value > maximum):
        allowed = f"1..{maximum:,}" if maximum is not None else "a positive integer"
        raise FrankenError(f"{option} must be {allowed} ({what}), got {value}")
    return value


def suggest(name: str, valid: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def task_names(text: str, option: str = "--tasks") -> list[str]:
    """The comma-separated task names of `text`, each a registered task, in order, duplicates dropped."""
    from frankenlm.eval.tasks import list_tasks

    names = list(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))
    if not names:
        raise FrankenError(f"{option} is empty: name at least one task (see `frankenlm tasks`)")
    valid = list_tasks()
    for n in names:
        if n not in valid:
            raise FrankenError(f"unknown task {n!r}{suggest(n, valid)}; valid tasks: {', '.join(valid)}")
    return names


def writable_file(path: Path | None, option: str) -> Path | None:
    """`path` if a file can be written there (its folder exists or can be made, and is writable), else a refusal.

    Checked before the work, so a long evaluation is not lost at the end. Creates missing parent folders.
    """
    from frankenlm.export.files import can_create_in, writable_parent  # here: the export package loads torch

    if path is None:
        return None
    if str(path) == "":
        raise FrankenError(f"{option} is empty: give a file path")
    if path.is_dir():
        raise FrankenError(f"{option} {str(path)!r} is a directory: give a file path, e.g. {str(path / 'out.json')!r}")
    parent = path.parent if str(path.parent) else Path(".")
    writable_parent(path, option)  # a file in the way of its folder, or an unwritable ancestor: before any mkdir
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FrankenError(f"{option} {str(path)!r}: cannot create its folder {str(parent)!r} ({e.strerror})") from None
    if not can_create_in(parent) or (path.exists() and not os.access(path, os.W_OK)):
        raise FrankenError(f"{option} {str(path)!r} is not writable: choose a path in a folder you can write to")
    return path


def check_prompt(prompt: str) -> str:
    """A non-empty prompt (generation needs at least one token to continue)."""
    if prompt == "":
        raise FrankenError("--prompt is empty: give some text to continue, e.g. --prompt 'The capital of France is'")
    return prompt
