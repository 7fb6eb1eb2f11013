"""deepinfra: Python binding (ctypes) of libdeepinfra.

``import deepinfra`` never fails and never loads the C library; the library
is found and loaded on first use (see ``deepinfra._lib`` for the lookup
order: DEEPINFRA_LIBRARY_PATH, DINF_BUILD_DIR, the build tree, the installed
location, the dynamic loader). The core needs only the standard library;
``deepinfra.eplb``, ``deepinfra.gemm``, ``deepinfra.mla`` and ``deepinfra.ep`` need numpy and are imported on
first access, as are ``deepinfra.dualpipe`` and ``deepinfra.jit`` (the JIT
cache: directory, warm-up, counters).

Every failed C call raises a :class:`DeepInfraError` subclass carrying the
library's ``dinf_last_error()`` message and its status.
"""

from ._lib import PACKAGE_VERSION as __version__
from ._lib import (
    CudaError,
    DeepInfraError,
    DeepInfraTimeoutError,
    DType,
    InternalError,
    InvalidArgumentError,
    JitError,
    LibraryError,
    LibraryNotFoundError,
    LibraryVersionError,
    NcclError,
    OutOfMemoryError,
    Status,
    UnsupportedError,
)
from .core import (
    device_query,
    dtype_name,
    dtype_size,
    last_error,
    library_path,
    status_string,
    version,
    version_code,
)

# Module bindings imported on first access (some need numpy).
_SUBMODULES = ("eplb", "dualpipe", "gemm", "mla", "ep", "jit")

__all__ = [
    "__version__",
    "version",
    "version_code",
    "library_path",
    "device_query",
    "status_string",
    "last_error",
    "dtype_size",
    "dtype_name",
    "Status",
    "DType",
    "DeepInfraError",
    "InvalidArgumentError",
    "UnsupportedError",
    "OutOfMemoryError",
    "CudaError",
    "NcclError",
    "JitError",
    "DeepInfraTimeoutError",
    "InternalError",
    "LibraryError",
    "LibraryNotFoundError",
    "LibraryVersionError",
] + list(_SUBMODULES)


def __getattr__(name):
    # Submodules that need numpy are imported on first access, so that
    # `import deepinfra` works with the standard library alone.
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
