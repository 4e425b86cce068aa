"""Safe output for exports: nothing is overwritten without ``force``, nothing half-written is left behind.

* `check_file_target` / `check_dir_target` refuse before any work is done: an existing file (or a non-empty
  directory) unless ``force``; a directory where a file is wanted and the reverse; a parent that cannot be
  created or written.
* `atomic_file` yields a temporary path beside the target and renames it over the target only when the body
  finished; on any error the temporary file, and any parent directories it created, are removed.
* `atomic_dir` does the same for a directory: the export is written into a temporary sibling directory, then
  moved into place. Into an existing non-empty directory (``force``) its files replace same-named files, and
  the only other files removed are those the previous frankenlm export listed as its own (``frankenlm.json``
  ``files``): an export never deletes a file it did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from frankenlm.errors import FrankenError

MARKER = "frankenlm.json"
# files that make transformers load weights from a directory: foreign ones would mix into an export
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def writable_parent(out: Path, what: str) -> None:
    """The nearest existing ancestor of `out` must be a writable directory (checked without creating anything)."""
    p = out.parent
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise FrankenError(f"{what} {str(out)!r}: {str(p)!r} is a file, not a directory: choose another path")
    if not can_create_in(p):
        raise FrankenError(f"{what} {str(out)!r}: directory {str(p)!r} is not writable: choose another path")


def can_create_in(folder: Path) -> bool:
    """Whether a file can be created in `folder`, tried for real (permission bits do not bind root, and some file
    systems refuse writes whatever the bits say)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_file_target(out: str | os.PathLike, force: bool, what: str, example: str) -> Path:
    """Refuse a file target that is a directory, an existing file (unless `force`), or not writable."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise FrankenError(f"{what} {str(out)!r} is a directory: give a file path such as {example}")
    if out.exists() and not force:
        raise FrankenError(f"{what} {str(out)!r} already exists: pass --force (force=True) to replace it")
    if out.exists() and not out.is_file():
        raise FrankenError(f"{what} {str(out)!r} exists and is not a regular file: choose another path")
    writable_parent(out, what)
    return out


def _previous_files(out: Path) -> set[str]:
    """The files an earlier frankenlm export into `out` said it wrote."""
    try:
        files = json.loads((out / MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    return {str(f) for f in files} if isinstance(files, list) else set()


def check_dir_target(out: str | os.PathLike, force: bool, what: str = "export directory") -> Path:
    """Refuse a directory target that is a file, non-empty (unless `force`), not writable, or that holds
    model weights an earlier frankenlm export did not write (they would be loaded together with the export)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FrankenError(f"{what} {str(out)!r} is an existing file: give a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FrankenError(
                f"{what} {str(out)!r} exists and is not empty: choose a new directory or pass --force "
                "(force=True) to write into it"
            )
        ours = _previous_files(out) | {MARKER}
        foreign = sorted(
            f.name
            for f in out.iterdir()
            if f.name not in ours and (f.name.endswith(_WEIGHT_SUFFIXES) or f.name in _WEIGHT_INDEXES)
        )
        if foreign:
            raise FrankenError(
                f"{what} {str(out)!r} holds weights frankenlm did not write ({', '.join(foreign[:3])}): they would "
                "load together with the export, and an export never deletes files it did not write: choose an "
                "empty directory"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise FrankenError(f"{what} {str(out)!r} is not writable: choose another path")
    writable_parent(out, what)
    return out


def _make_parents(p: Path) -> list[Path]:
    """mkdir -p; returns the directories it created (deepest last)."""
    created = []
    q = p
    while not q.exists():
        created.append(q)
        q = q.parent
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FrankenError(f"cannot create directory {str(p)!r}: {e.strerror or e}") from None
    return list(reversed(created))


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def atomic_file(out: Path):
    """Yield a temporary path beside `out`; rename it to `out` when the body returns, remove it on error."""
    created = _make_parents(out.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    except OSError as e:
        _remove_dirs(created)
        raise FrankenError(f"cannot write {str(out)!r}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        tmp.replace(out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_dirs(created)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def atomic_dir(out: Path):
    """Yield a temporary directory beside `out`; move its files into `out` when the body returns.

    The caller has run `check_dir_target`. Files listed as written by an earlier export (and not written
    now) are removed; every other file already in `out` is kept.
    """
    created = _make_parents(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        _remove_dirs(created)
        raise FrankenError(f"cannot write into {str(out.parent)!r}: {e.strerror or e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            tmp.rename(out)
            return
        new = {f.name for f in tmp.iterdir()}
        stale = _previous_files(out) - new
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
        for name in stale:
            p = out / name
            if p.is_file() and p.parent == out:
                p.unlink()
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_dirs(created)
        raise
