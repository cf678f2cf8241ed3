"""Process-level speed settings: allocator tuning, threads, device choice."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from .dataclass_io import ConfigError

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_tuned = False


def tune_allocator() -> bool:
    """Keep activations (up to 256 MB each) in the glibc heap instead of mmap/munmap on every pass.

    glibc returns allocations over its mmap threshold to the kernel and page-faults them back
    on the next forward pass; raising the thresholds keeps them. Full-resolution maps of very
    large photos (a float map of a 100-megapixel image is 400 MB) stay above the threshold and
    go back to the kernel when freed, and at most 512 MB of free heap is kept. One malloc arena
    for all threads: the TTA views and the output writers run in worker threads, and with an
    arena per thread each kept its own free memory. Figures: benchmarks/README.md. A setting of
    the whole process: called by our command-line entry points only (``cli.run_command``, so
    ``lesionseg gui``'s napari has it too), never by the plugin inside a napari started otherwise.
    Returns True when applied; a no-op on non-glibc platforms.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, 256 << 20))
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, 512 << 20))
    ok &= bool(mallopt(_M_TOP_PAD, 256 << 20))
    ok &= bool(mallopt(_M_ARENA_MAX, 1))
    _tuned = ok
    return ok


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The one device rule, for inference and training. ``auto`` picks CUDA (``cuda:<local
    rank>`` under torchrun), then Apple MPS, then the CPU; ``cuda`` means the local rank's GPU;
    an explicit device that is unavailable is a clear error."""
    name = name.lower()
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif mps is not None and mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU")
    if name == "cuda":
        return torch.device("cuda", local_rank) if local_rank else torch.device("cuda")
    if name == "mps" and (mps is None or not mps.is_available()):
        raise ConfigError("device 'mps' was asked for, but Apple MPS is not available")
    if name not in ("cpu", "mps") and not re.fullmatch(r"cuda:\d+", name):
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)")
    return torch.device(name)


def default_threads() -> int:
    """Threads for CPU work: all cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512_BF16 or AMX): there oneDNN's bf16
    convolutions run about twice as fast as fp32. Elsewhere bf16 is emulated and slower.
    Probed once per process (it is asked on every prediction and training step)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if probe is not None and (probe() or (amx is not None and amx())):
            return True
    except RuntimeError:  # pragma: no cover - a build without the probe
        pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _cuda_bf16() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError, AttributeError):  # no CUDA build or driver
        return False


def autocast_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype | None:
    """The one autocast rule, for inference and training (None: plain fp32).

    ``auto``: bfloat16 on CUDA GPUs with bf16 and on CPUs with native bf16 (AVX512_BF16/AMX);
    float16 on other CUDA GPUs for inference only (training in fp16 would need loss scaling);
    fp32 elsewhere (MPS, older CPUs, where bf16 is emulated and slower). ``bf16`` asks for
    bfloat16 wherever it runs; ``fp32`` turns autocast off."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_bf16() else (None if training else torch.float16)
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or nothing for plain fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


_CPU_POOL: ThreadPoolExecutor | None = None


def cpu_pool() -> ThreadPoolExecutor:
    """Shared worker threads (one per core) for NumPy, Pillow and zlib work that releases the
    GIL. Tasks given to it must not wait on it themselves."""
    global _CPU_POOL
    if _CPU_POOL is None:
        _CPU_POOL = ThreadPoolExecutor(max(2, default_threads()), thread_name_prefix="lesionseg-cpu")
    return _CPU_POOL


def row_blocks(rows: int, parts: int) -> list[slice]:
    """``parts`` (at most ``rows``) contiguous, nearly equal row ranges covering ``[0, rows)``."""
    parts = max(1, min(parts, rows))
    cuts = [round(i * rows / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
