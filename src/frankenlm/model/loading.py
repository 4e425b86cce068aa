"""One loader for every model source: a zoo name, a `.gguf` file, a local HF directory, or a Hugging Face id.

GGUF sources (zoo models included) are converted once to a safetensors directory under the cache, keyed by the
GGUF's SHA-256, so later loads take well under a second. Every loaded model carries a `digest` that identifies
its weights, used to key stored results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from frankenlm.errors import FrankenError
from frankenlm.model import zoo

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CACHE_VERSION = 1


@dataclass
class LoadedModel:
    """A base model ready to use: the transformers model, its tokenizer and a digest of its weights."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    digest: str
    path: str  # a directory plain `from_pretrained` can load

    @property
    def depth(self) -> int:
        return int(self.model.config.num_hidden_layers)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise FrankenError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


DEVICE_MAP_AUTO = "auto"  # --device auto: split the model over all visible GPUs with accelerate's device_map


def parse_device(device: str | torch.device | None) -> torch.device:
    """A torch device; "auto" (split over all GPUs) is checked and answered with the first GPU."""
    if device is None:
        return torch.device("cpu")
    if device == DEVICE_MAP_AUTO:
        if not torch.cuda.is_available():
            raise FrankenError(
                "--device auto splits the model over GPUs, but this machine has no CUDA GPU: use --device cpu"
            )
        return torch.device("cuda", 0)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FrankenError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise FrankenError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FrankenError(f"device {device!r} was asked for but this machine has no CUDA GPU: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FrankenError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*packed.*float32.*")


def _check_gguf_header(path: Path) -> None:
    if not path.is_file():
        raise FrankenError(f"GGUF file {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise FrankenError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, expected b'GGUF')")


def _convert_gguf(path: Path, digest: str) -> Path:
    """Load a GGUF with transformers (dequantized to fp32) and save a safetensors copy in the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = zoo.cache_root() / "hf" / digest[:24]
    marker = out / "frankenlm.json"
    if marker.exists():
        return out
    _check_gguf_header(path)
    _quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # the GGUF reader fails in many ways on truncated/corrupt files
        raise FrankenError(f"cannot read GGUF {str(path)!r} (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if getattr(model, "hf_quantizer", None) is not None:
        del model.hf_quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "frankenlm.json").write_text(
        json.dumps({"source": str(path), "sha256": digest, "cache_version": _CACHE_VERSION})
    )
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return out
    tmp.replace(out)
    return out


def _dir_digest(path: Path) -> str:
    """Digest of a local HF directory's config and weights (file contents for small dirs, names+sizes otherwise)."""
    marker = path / "frankenlm.json"
    if marker.exists():
        return json.loads(marker.read_text())["sha256"]
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
            h.update(f.name.encode())
            if f.stat().st_size < 2_000_000_000:
                h.update(zoo.sha256_file(f).encode())
            else:
                h.update(str(f.stat().st_size).encode())
    return h.hexdigest()


def resolve(source: str) -> tuple[str, Path, str]:
    """(display name, HF directory, digest) for a model source, converting GGUFs on first use."""
    name = zoo.display_name(source)
    if source in zoo.ZOO:
        gguf = zoo.gguf_path(source)
        digest = zoo.ZOO[source].sha256
        return name, _convert_gguf(gguf, digest), digest
    p = Path(source).expanduser()
    if source.endswith(".gguf") or (p.is_file() and p.suffix == ".gguf"):
        _check_gguf_header(p)
        digest = zoo.sha256_file(p)
        return name, _convert_gguf(p.resolve(), digest), digest
    if p.is_dir():
        if not (p / "config.json").exists():
            raise FrankenError(f"directory {source!r} has no config.json: it is not a Hugging Face model directory")
        return name, p, _dir_digest(p)
    if "/" in source and not p.exists():
        return name, Path(_hub_download(source)), ""
    raise FrankenError(
        f"unknown model {source!r}: give a zoo name ({', '.join(zoo.ZOO)}), a .gguf file, a model directory "
        "or a Hugging Face id (org/name)"
    )


def _hub_download(repo_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except Exception as e:
        raise FrankenError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}): offline?"
        ) from None


def load_model(
    source: str, dtype: str | torch.dtype = torch.float32, device: str | torch.device | None = "cpu"
) -> LoadedModel:
    """Load a base model and tokenizer from any supported source."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = parse_dtype(dtype)
    dev = parse_device(device)
    name, path, digest = resolve(source)
    _quiet_transformers()
    split = device == DEVICE_MAP_AUTO
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt, **({"device_map": "auto"} if split else {}))
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise FrankenError(f"cannot load model from {str(path)!r}: {type(e).__name__}: {e}") from None
    if not digest:
        digest = _dir_digest(path)
    if split:
        check_split(model, name)
    else:
        model.to(dev)
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, name, digest, str(path))


def check_split(model, name: str) -> None:
    """A model loaded with device_map must be wholly on GPUs: offloaded weights cannot be shared by positions."""
    where = set(map(str, (getattr(model, "hf_device_map", None) or {}).values()))
    offloaded = where & {"cpu", "disk", "meta"}
    if offloaded or any(p.is_meta for p in model.parameters()):
        raise FrankenError(
            f"{name} does not fit in the GPUs' memory: accelerate offloaded part of it to {sorted(offloaded)}. "
            "Frankenmodels bind positions to resident weights; use more GPUs, bfloat16, or a smaller model"
        )


def configure_cpu(threads: int | None) -> None:
    """Process-wide CPU settings for scoring: torch's threads (None keeps torch's default) and the allocator."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 32 MiB for reuse (False where there is no glibc).

    By default glibc serves such blocks with fresh mmaps and returns freed heap tops to the kernel, so a scorer
    that allocates and frees logits and activations every batch has every page faulted in and zeroed again. With
    the threshold fixed at its maximum (32 MiB) and trimming only past 1 GiB, the pages are reused: a full-scan
    study (`frankenlm study --preset full-scan`, with the scorer's 32 MiB head chunks) went from 82M minor page
    faults and 211 s of system time to 0.26M and 11 s.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def gguf_source_path(source: str) -> Path:
    """The GGUF file behind a zoo name or a .gguf path (GGUF exports copy tensors from it)."""
    if source in zoo.ZOO:
        return zoo.gguf_path(source)
    p = Path(source).expanduser()
    if p.suffix == ".gguf":
        _check_gguf_header(p)
        return p
    raise FrankenError(
        f"GGUF export needs a GGUF source, and {source!r} is not one: export with --format hf and convert with "
        "llama.cpp's convert_hf_to_gguf.py"
    )
