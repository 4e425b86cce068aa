"""Compact, committable exports of a results store: every row as one line of a zstd-compressed Parquet file.

A study's SQLite store grows to hundreds of MB; its rows compress well (per-item results are repetitive JSON).
`export_store` writes every row — key, unit fields, scoring version, per-item results and meta, exactly as
stored — to Parquet; `import_store` adds the rows of such files to a store (rows already there are kept: a row is
a pure function of its key). Because keys carry everything that determines a row, a study pointed at a store
that imported an archive skips every unit the archive holds and computes only the rest: a long run continues on
another machine from the committed archive, and `frankenlm report` re-renders it without recomputing a model.
Archives are append-friendly: `export_store(..., since=...)` writes only rows newer than a time, so a long run
can commit one small file per working session.
"""

from __future__ import annotations

from pathlib import Path

from frankenlm.errors import FrankenError
from frankenlm.study.store import _COLUMNS, Store

COMPRESSION = "zstd"


def _schema():
    import pyarrow as pa

    types = {"n_items": pa.int64(), "created": pa.float64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in _COLUMNS])


def export_store(store: Store | str | Path, out: str | Path, since: float | None = None) -> int:
    """Write the rows of `store` (created after `since`, when given) to Parquet file `out`; returns the count.
    Written to a temporary name and renamed, so an interrupted export leaves no half file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    own = not isinstance(store, Store)
    st = Store(store) if own else store
    try:
        query = f"SELECT {', '.join(_COLUMNS)} FROM results"
        args: tuple = ()
        if since is not None:
            query += " WHERE created > ?"
            args = (float(since),)
        rows = st.db.execute(query + " ORDER BY created, key", args).fetchall()
    finally:
        if own:
            st.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(zip(_COLUMNS, r, strict=True)) for r in rows], schema=_schema())
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression=COMPRESSION)
    tmp.replace(out)
    return len(rows)


def _read(path: str | Path, schema_only: bool):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FrankenError(f"results archive {str(path)!r} does not exist")
    try:
        got = pq.read_schema(path) if schema_only else pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise FrankenError(f"results archive {str(path)!r} is not a Parquet file ({e})") from None
    names = got.names if schema_only else got.column_names
    if tuple(names) != _COLUMNS:
        raise FrankenError(
            f"results archive {str(path)!r} is not a frankenlm store export (columns {', '.join(names)})"
        )
    return got


def archive_paths(paths: list[str | Path]) -> list[Path]:
    """The archive files named: a folder stands for every `*.parquet` in it (sorted), so that a folder of
    committed exports is one argument (a shell glob gives several)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise FrankenError(f"results archive folder {str(p)!r} holds no *.parquet file")
            out.extend(found)
        else:
            out.append(p)
    return out


def check_archive(path: str | Path) -> None:
    """Refuse (FrankenError naming the file) a missing file or one that is not a store export; reads only the
    file's schema, so a study can check its archives before it starts without reading them twice."""
    _read(path, schema_only=True)


def read_archive(path: str | Path) -> list[tuple]:
    """The rows of an archive file, in `_COLUMNS` order (FrankenError naming the file if it is not one)."""
    table = _read(path, schema_only=False)
    cols = [table.column(c).to_pylist() for c in _COLUMNS]
    return list(zip(*cols, strict=True))


def import_store(paths: list[str | Path], store: Store | str | Path) -> tuple[int, int]:
    """Add the rows of archive files to `store` in one transaction; returns (rows read, rows added)."""
    rows = [r for p in archive_paths(paths) for r in read_archive(p)]
    own = not isinstance(store, Store)
    st = Store(store) if own else store
    try:
        before = st.count()
        st.db.execute("BEGIN IMMEDIATE")
        try:
            st.db.executemany(f"INSERT OR IGNORE INTO results VALUES ({','.join('?' * len(_COLUMNS))})", rows)
            st.db.execute("COMMIT")
        except BaseException:
            st.db.execute("ROLLBACK")
            raise
        return len(rows), st.count() - before
    finally:
        if own:
            st.close()
