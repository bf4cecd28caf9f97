"""Compile a CUDA source of `kernels/cuda/` at first use and cache the shared library.

Needs nvcc (CUDA 12.4 or later, for sm_90a) and CUTLASS's headers, found in this order:
ACT24_CUTLASS_DIR or CUTLASS_PATH (a CUTLASS checkout: the folder holding `include/cutlass`), then
the `nvidia-cutlass` package (`pip install 'act24[cutlass]'`). Libraries are cached in
ACT24_CACHE_DIR (default ~/.cache/act24), named by a hash of the sources, the flags, nvcc's version
and CUTLASS's version, so an upgrade of any of them rebuilds. A source may come in variants chosen by
preprocessor definitions (`load_library(name, ("NAME=VALUE", ...))`), each built when first needed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import threading

SOURCE_DIR = pathlib.Path(__file__).parent / "cuda"
# -DNDEBUG matters: with CUTLASS's device-side asserts compiled in, its sm90 GEMMs ran up to 1.5x slower
FLAGS = ("-std=c++17", "-O3", "-DNDEBUG", "-arch=sm_90a", "--expt-relaxed-constexpr", "-diag-suppress", "20012,177",
         "-Xcompiler", "-fPIC", "-shared")


_build_lock = threading.Lock()  # one build at a time in a process (e.g. a thread per GPU); processes write their own files


class BuildUnavailable(RuntimeError):
    """nvcc or CUTLASS's headers are missing: the caller falls back to the unfused kernels."""


def find_nvcc() -> str | None:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and pathlib.Path(home, "bin", "nvcc").is_file():
            return str(pathlib.Path(home, "bin", "nvcc"))
    default = pathlib.Path("/usr/local/cuda/bin/nvcc")
    return shutil.which("nvcc") or (str(default) if default.is_file() else None)


def _has_headers(root: pathlib.Path) -> bool:
    return (root / "include" / "cutlass" / "cutlass.h").is_file()


def find_cutlass() -> pathlib.Path | None:
    """The CUTLASS folder whose `include/` holds `cutlass/cutlass.h`, or None."""
    for var in ("ACT24_CUTLASS_DIR", "CUTLASS_PATH"):
        root = os.environ.get(var)
        if root and _has_headers(pathlib.Path(root)):
            return pathlib.Path(root)
    spec = importlib.util.find_spec("cutlass_library")  # located, not imported: its import is slow
    if spec is not None and spec.submodule_search_locations:
        root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "source"
        if _has_headers(root):
            return root
    return None


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ACT24_CACHE_DIR") or pathlib.Path.home() / ".cache" / "act24")


def library_key(name: str, nvcc: str, cutlass: pathlib.Path, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for source in [SOURCE_DIR / f"{name}.cu", *sorted(SOURCE_DIR.glob("*.cuh"))]:
        digest.update(source.read_bytes())
    digest.update(" ".join(flags).encode())
    digest.update(subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout.encode())
    digest.update((cutlass / "include" / "cutlass" / "version.h").read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def load_library(name: str, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """`kernels/cuda/<name>.cu` compiled for sm_90a (once per source, flags, `defines` ("NAME=VALUE",
    passed as -D flags) and toolchain) and loaded.

    Raises BuildUnavailable without nvcc or CUTLASS, RuntimeError if nvcc fails."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildUnavailable("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    cutlass = find_cutlass()
    if cutlass is None:
        raise BuildUnavailable("CUTLASS's headers were not found (pip install 'act24[cutlass]', or set "
                               "ACT24_CUTLASS_DIR to a CUTLASS checkout)")
    flags = (*FLAGS, *(f"-D{d}" for d in defines))
    out = cache_dir() / f"{name}-{library_key(name, nvcc, cutlass, flags)}.so"
    with _build_lock:
        if not out.is_file():
            _build(name, nvcc, cutlass, out, flags)
    return ctypes.CDLL(str(out))


def _build(name: str, nvcc: str, cutlass: pathlib.Path, out: pathlib.Path, flags: tuple[str, ...]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    variant = " ".join(f for f in flags if f.startswith("-D") and f != "-DNDEBUG")
    print(f"act24: compiling {name}.cu {variant + ' ' if variant else ''}for sm90 (once, under a minute; cached in "
          f"{out.parent})", file=sys.stderr, flush=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")  # processes building at once each write their own
    command = [nvcc, *flags, "-I", str(cutlass / "include"), "-I", str(SOURCE_DIR),
               str(SOURCE_DIR / f"{name}.cu"), "-o", str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"nvcc failed to build {name}.cu ({' '.join(command)}):\n{result.stderr[-4000:]}")
    os.replace(partial, out)  # atomic: a library is either whole or absent
