"""The run-time compilation cache behind the GEMM kernels (include/deepinfra/jit.h).

Some kernels (the FP8 GEMMs) are compiled by NVRTC at run time for the exact
tile configuration a shape uses, kept in a disk cache and in memory. The
first call of a configuration compiles it (0.2-0.4 s per kernel); this
module lets an engine choose the cache directory, compile ahead of serving
and read the counters::

    import deepinfra
    deepinfra.jit.set_cache_dir("/var/cache/myengine/deepinfra")   # optional
    # the kernels every batch size up to 4096 of two projections will use:
    deepinfra.gemm.precompile("normal", n=2112, k=7168, m=range(1, 4097))
    deepinfra.gemm.precompile("normal", n=7168, k=2048, m=range(1, 4097))
    print(deepinfra.jit.stats())       # compiles, disk hits, seconds in NVRTC

On a machine without a GPU (a build box filling a shared cache), pass
``arch="sm_90a"`` and the device's SM count (``num_sms=132`` for an H100 or
H200 SXM) to :func:`deepinfra.gemm.precompile`: the kernels are compiled and
cached, not loaded. The cache key covers the generated source, the NVRTC
version, the options, the architecture and the library version, so a cache
filled elsewhere is used only where it matches.

Standard library only. Without NVRTC (or in a CPU-only build) the calls
raise :class:`~deepinfra.UnsupportedError` saying why; a refused cache
directory raises :class:`~deepinfra.JitError`.
"""

from __future__ import annotations

import collections
import ctypes
import os

from . import _lib
from ._lib import JIT_MAX_PARAMS, JIT_NAME_MAX, InvalidArgumentError, JitKernelConfig, JitStats

__all__ = [
    "KernelConfig",
    "Stats",
    "TEMPLATE_CONSTANTS",
    "nvrtc_version",
    "cache_dir",
    "set_cache_dir",
    "precompile",
    "stats",
]

# The compile-time constants of each kernel template the library ships, in
# the template's order (jit/jit_source.c, the registry; each template's header
# in jit/templates documents their values).
TEMPLATE_CONSTANTS = {
    "scale_rows": ("BLOCK_THREADS", "ELEMS_PER_THREAD", "OUT_BF16"),
    "fp8_gemm": ("GEMM_TYPE", "BLOCK_M", "BLOCK_N", "NUM_STAGES"),
    "fp8_gemm_fast": ("GEMM_TYPE", "BLOCK_M", "BLOCK_N", "NUM_STAGES", "CLUSTER", "SPLIT_K"),
    "fp8_gemm_1d1d": ("BLOCK_M", "BLOCK_N", "NUM_STAGES"),
    "f32_gemm_nt_ref": ("TILE",),
}


class KernelConfig:
    """One JIT kernel (dinf_jit_kernel_config): a template name and the values of
    its compile-time constants, in the template's order.

    Immutable, hashable, equal when name and params are; ``str()`` gives the
    library's own spelling (``fp8_gemm_fast<0,128,112,6,2,1>``, as in its
    ``DINF_JIT_LOG=1`` lines) and :attr:`constants` names the values. Usually
    obtained from a module (:func:`deepinfra.gemm.kernel_config`); the library
    checks name and values when the config is compiled.
    """

    __slots__ = ("_name", "_params")

    def __init__(self, name, params):
        if not isinstance(name, str):
            raise InvalidArgumentError("name must be a str, got %s" % type(name).__name__)
        raw = name.encode("utf-8")
        if not raw or len(raw) >= JIT_NAME_MAX or b"\0" in raw:
            raise InvalidArgumentError(
                "name=%r must be 1..%d bytes without NUL" % (name, JIT_NAME_MAX - 1))
        params = tuple(_lib.int64_arg("params[%d]" % i, p) for i, p in enumerate(params))
        if len(params) > JIT_MAX_PARAMS:
            raise InvalidArgumentError(
                "%d params: a kernel template takes at most %d" % (len(params), JIT_MAX_PARAMS))
        self._name = name
        self._params = params

    @property
    def name(self):
        """The template name, e.g. ``"fp8_gemm_fast"``."""
        return self._name

    @property
    def params(self):
        """The constants' values (tuple of int), in the template's order."""
        return self._params

    @property
    def constants(self):
        """``{constant name: value}`` for a template of :data:`TEMPLATE_CONSTANTS`
        whose count matches, else ``{"P0": v0, ...}``."""
        names = TEMPLATE_CONSTANTS.get(self._name)
        if names is None or len(names) != len(self._params):
            names = tuple("P%d" % i for i in range(len(self._params)))
        return dict(zip(names, self._params))

    def __eq__(self, other):
        if not isinstance(other, KernelConfig):
            return NotImplemented
        return self._name == other._name and self._params == other._params

    def __hash__(self):
        return hash((self._name, self._params))

    def __str__(self):
        return "%s<%s>" % (self._name, ",".join(str(p) for p in self._params))

    def __repr__(self):
        return "KernelConfig(%r, %r)" % (self._name, self._params)

    def _to_c(self):
        c = JitKernelConfig()
        c.size = ctypes.sizeof(JitKernelConfig)
        c.name = self._name.encode("utf-8")
        c.num_params = len(self._params)
        for i, p in enumerate(self._params):
            c.params[i] = p
        return c

    @classmethod
    def _from_c(cls, c):
        n = int(c.num_params)
        return cls(c.name.decode("utf-8"), tuple(int(c.params[i]) for i in range(n)))


Stats = collections.namedtuple(
    "Stats",
    ["compiles", "compile_errors", "memory_hits", "disk_hits", "disk_rejects", "loads",
     "compile_seconds"],
)
Stats.__doc__ = """The JIT's counters since the process started (dinf_jit_stats):
``compiles`` (NVRTC compilations that produced a cubin), ``compile_errors``,
``memory_hits`` (requests answered by the in-process table), ``disk_hits``,
``disk_rejects`` (cache entries ignored: corrupt, foreign, unsafe), ``loads``
(cubins loaded into the CUDA runtime), ``compile_seconds`` (wall time in NVRTC)."""


def nvrtc_version():
    """``(major, minor)`` of the NVRTC the library compiles with (dinf_jit_nvrtc_version).

    Raises UnsupportedError when NVRTC is not found (the message lists the
    names tried; ``DINF_NVRTC_LIBRARY`` names another file) or in a CPU-only
    build."""
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    _lib.lib().dinf_jit_nvrtc_version(ctypes.byref(major), ctypes.byref(minor))
    return int(major.value), int(minor.value)


def cache_dir():
    """The disk cache directory in use now (dinf_jit_get_cache_dir): the last
    :func:`set_cache_dir`, else ``$DINF_JIT_CACHE_DIR``,
    ``$XDG_CACHE_HOME/deepinfra``, ``$HOME/.cache/deepinfra``. Not created or
    checked by this call. Raises JitError when none can be chosen."""
    L = _lib.lib()
    needed = ctypes.c_size_t(0)
    try:
        L.dinf_jit_get_cache_dir(None, 0, ctypes.byref(needed))
    except InvalidArgumentError:
        pass  # the size query: "buffer too small" with needed written
    while True:
        buf = ctypes.create_string_buffer(max(int(needed.value), 1))
        try:
            L.dinf_jit_get_cache_dir(buf, len(buf), ctypes.byref(needed))
        except InvalidArgumentError:
            if needed.value > len(buf):  # changed by another thread in between
                continue
            raise
        return os.fsdecode(buf.value)


def set_cache_dir(path):
    """Use ``path`` (absolute; str or bytes or os.PathLike) as the disk cache of
    this process from now on; ``None`` goes back to the environment's choice
    (dinf_jit_set_cache_dir). The directory is created now (mode 0700, with
    parents) and checked: a relative or too long path raises
    InvalidArgumentError; one that cannot be created, is owned by another user
    or is group- or world-writable raises JitError."""
    if path is None:
        _lib.lib().dinf_jit_set_cache_dir(None)
        return
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise InvalidArgumentError("path contains a NUL byte")
    _lib.lib().dinf_jit_set_cache_dir(raw)


def _configs_array(configs):
    if isinstance(configs, KernelConfig):
        configs = [configs]
    items = list(configs)
    for i, c in enumerate(items):
        if not isinstance(c, KernelConfig):
            raise InvalidArgumentError(
                "configs[%d] is a %s, not a deepinfra.jit.KernelConfig" % (i, type(c).__name__))
    arr = (JitKernelConfig * max(len(items), 1))()
    for i, c in enumerate(items):
        arr[i] = c._to_c()
    return arr, len(items)


def precompile(configs, arch=None):
    """Compile (or read from the disk cache) each kernel of ``configs`` now
    (dinf_jit_precompile): a KernelConfig or an iterable of them.

    ``arch``: ``None`` compiles for the current CUDA device and loads the
    kernels (ready to launch; needs a GPU); a string such as ``"sm_90a"``
    compiles and caches for that target without loading (no GPU needed).
    Kernels not cached yet compile in parallel (``DINF_JIT_THREADS`` threads,
    default one per core up to 16). Synchronous. Raises InvalidArgumentError
    (unknown template, wrong number of constants, a value out of range, a
    malformed arch), UnsupportedError (no NVRTC, CPU-only build), JitError
    (compile error with NVRTC's log, cache refused) or CudaError (arch None
    without a usable device); the message names the lowest failing index."""
    arr, count = _configs_array(configs)
    raw_arch = None
    if arch is not None:
        if not isinstance(arch, str):
            raise InvalidArgumentError("arch must be a str such as 'sm_90a' or None")
        raw_arch = arch.encode("utf-8")
    _lib.lib().dinf_jit_precompile(arr, count, raw_arch)


def stats():
    """The JIT's counters since the process started, as a :class:`Stats`
    (dinf_jit_get_stats). Raises UnsupportedError in a CPU-only build."""
    s = JitStats()
    s.size = ctypes.sizeof(JitStats)
    _lib.lib().dinf_jit_get_stats(ctypes.byref(s))
    return Stats(int(s.compiles), int(s.compile_errors), int(s.memory_hits), int(s.disk_hits),
                 int(s.disk_rejects), int(s.loads), float(s.compile_seconds))
