"""Build the fused CPU kernels (``csrc/*.c``) at first use and load them with ctypes.

Why a plain C file and ctypes: it needs only the system C compiler (no torch headers, no ninja, no
new dependency), builds in about two seconds, and the library it makes is cached per user, so only
the first process on a machine pays. The cache key hashes the source, the compiler's identity, the
flags and the CPU's feature flags (``-march=native`` code must not move to another CPU).

Several processes may build at once: each compiles to its own temporary file in the cache folder
and renames it into place (atomic on one file system), so a reader only ever sees a whole library.
Where no compiler is found or the build fails, :func:`load` returns None with the reason, and the
caller falls back to the pure-PyTorch ops (logged once).

Environment: ``SKILLSOUP_CPU_KERNELS=0`` turns the kernels off; ``SKILLSOUP_KERNEL_CACHE`` moves
the cache folder (default: platformdirs' user cache folder for skillsoup); ``CC`` picks the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("scan.c", "step.c")  # compiled together; common.h is included by both
ABI_VERSION = 4  # SSC_ABI_VERSION in common.h
FLAG_SETS = (
    ["-O3", "-march=native", "-std=gnu11", "-shared", "-fPIC", "-pthread", "-Wno-psabi"],
    ["-O3", "-std=gnu11", "-shared", "-fPIC", "-pthread", "-Wno-psabi"],  # compilers without -march=native
)
BUILD_TIMEOUT_S = 180

_lock = threading.Lock()
_loaded: tuple[ctypes.CDLL | None, str] | None = None

_P, _I64, _I32, _F32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_SIGNATURES = {  # argument types of every exported kernel, in the order of its C prototype
    "ssc_selective_scan": [_I64] * 4 + [_P, _I64, _I64] * 5 + [_P, _P, _P, _I32, _P, _P, _I64, _I64, _P, _I32],
    "ssc_causal_conv1d": [_I64] * 4 + [_P, _I64, _I64, _P, _P, _P, _P, _I64, _I64, _P, _I32, _I32],
    "ssc_ssd_scan": [_I64] * 6 + [_P, _I64, _I64, _I64, _P, _I64, _I64, _P] + [_P, _I64, _I64, _I64] * 2
    + [_P, _P, _I32, _F32, _F32, _P, _P, _I64, _I64, _I64, _P, _I32],
    "ssc_selective_state_update": [_I64] * 3 + [_P, _I64] * 5 + [_P, _P, _P, _I32, _P, _P, _P],
    "ssc_mamba1_step": [_I64] * 5 + [_P, _I64] + [_P] * 12,
    "ssc_ssd_state_update": [_I64] * 5 + [_P, _I64, _P, _I64] + [_P, _I64, _I64] * 2
    + [_P, _P, _P, _I32, _F32, _F32, _P, _P, _P],
    "ssc_mamba2_step": [_I64] * 6 + [_P, _I64] + [_P] * 7 + [_F32, _F32, _P, _P, _P, _I64, _F32, _P],
    "ssc_add_rms_norm": [_I64, _I64, _P, _P, _P, _F32, _P],
}


def cache_dir() -> Path:
    env = os.environ.get("SKILLSOUP_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("skillsoup")) / "cpu_kernels"


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next((found for name in ("cc", "gcc", "clang") if (found := shutil.which(name))), None)


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _build_key(cc: str, flags: list[str]) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = cc
    h = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):  # every source and header
        if path.suffix in (".c", ".h"):
            h.update(path.name.encode() + path.read_bytes())
    for part in (cc, version, " ".join(flags), _cpu_identity(), platform.machine()):
        h.update(part.encode())
    return h.hexdigest()[:20]


def _compile(cc: str, flags: list[str], target: Path) -> str:
    """Compile into ``target`` through a temporary file and an atomic rename; '' or the error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        sources = [str(CSRC / name) for name in SOURCES]
        done = subprocess.run([cc, *flags, "-o", tmp, *sources, "-lm"], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or f"exit status {done.returncode}").strip().splitlines()
            return lines[-1] if lines else f"exit status {done.returncode}"
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: concurrent builders each put a whole library in place
        return ""
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.ssc_abi_version() != ABI_VERSION:
        raise OSError(f"{path.name} has ABI {lib.ssc_abi_version()}, expected {ABI_VERSION}")
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


def _build_and_load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("SKILLSOUP_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "SKILLSOUP_CPU_KERNELS is off"
    cc = compiler()
    if cc is None:
        return None, "no C compiler found (install gcc or clang, or set CC)"
    errors = []
    for flags in FLAG_SETS:
        target = cache_dir() / f"cpu_kernels-{_build_key(cc, flags)}.so"
        for attempt in range(2):  # a cached library that does not load is rebuilt once
            if not target.exists() or attempt:
                error = _compile(cc, flags, target)
                if error:
                    errors.append(f"{cc} {' '.join(flags[:2])}: {error}")
                    break
                log.info("built the fused CPU kernels into %s", target)
            try:
                return _open(target), ""
            except (OSError, AttributeError) as exc:
                errors.append(f"{target.name} does not load ({exc})")
    return None, "the C kernels do not build: " + "; ".join(errors)


def load() -> tuple[ctypes.CDLL | None, str]:
    """(library, '') once built, or (None, why not). Built or found once per process."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _build_and_load()
        return _loaded


def reset() -> None:
    """Forget the loaded library so the next :func:`load` looks again (tests)."""
    global _loaded
    with _lock:
        _loaded = None
