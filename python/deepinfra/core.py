"""Core helpers: version, status strings, last error, dtypes, device query.

Standard library only; the C library is loaded on first call.
"""

from __future__ import annotations

import ctypes

from . import _lib
from ._lib import DeviceInfo, DType, Status  # noqa: F401  (DType, Status re-exported)

__all__ = [
    "version",
    "version_code",
    "library_path",
    "status_string",
    "last_error",
    "dtype_size",
    "dtype_name",
    "device_query",
]


def version():
    """The loaded library's version string, e.g. ``"0.1.0+cuda"`` or ``"0.1.0+cpu"``
    (dinf_version_string; the suffix says whether it was built with CUDA)."""
    return _lib.lib().dinf_version_string().decode()


def version_code():
    """The loaded library's dinf_version(): major * 10000 + minor * 100 + patch."""
    return int(_lib.lib().dinf_version())


def library_path():
    """Absolute path of the loaded libdeepinfra.so.0 (loads it if needed)."""
    return _lib.library_path()


def status_string(code):
    """dinf_status_string: ``"ok"``, ``"invalid argument"``, ...; ``"unknown status"``
    for any int that is not a dinf_status value (including ones outside C int)."""
    code = _lib._as_int("code", code)
    if not _lib.INT32_MIN <= code <= _lib.INT32_MAX:
        return "unknown status"
    return _lib.lib().dinf_status_string(code).decode()


def last_error():
    """dinf_last_error: the message of the most recent failed call made by the
    calling thread ("" if none). Thread-local, as in C."""
    return _lib.lib().dinf_last_error().decode("utf-8", errors="replace")


def dtype_size(dtype):
    """Element size in bytes of a :class:`DType` (dinf_dtype_size).

    Raises InvalidArgumentError for a value that is not a dinf_dtype."""
    dtype = _lib.int32_arg("dtype", dtype)
    out = ctypes.c_size_t(0)
    _lib.lib().dinf_dtype_size(dtype, ctypes.byref(out))
    return int(out.value)


def dtype_name(dtype):
    """numpy / ml_dtypes spelling of a :class:`DType` ("float32", "bfloat16",
    "float8_e4m3fn", ...); "unknown" for other values."""
    dtype = _lib._as_int("dtype", dtype)
    if not _lib.INT32_MIN <= dtype <= _lib.INT32_MAX:
        return "unknown"
    return _lib.lib().dinf_dtype_name(dtype).decode()


def device_query(device=0):
    """Describe CUDA device ``device`` (dinf_device_query).

    Returns a dict with the dinf_device_info fields (all but the ``size``
    input field): ``built_with_cuda``, ``usable``, ``device_count``,
    ``device``, ``cc_major``, ``cc_minor``, ``sm_count``,
    ``runtime_version``, ``driver_version`` (ints), ``total_memory_bytes``,
    ``shared_memory_per_block_optin_bytes`` (ints), ``name`` and ``reason``
    (str). ``usable`` is 1 when the library's kernels run on the device;
    otherwise ``reason`` says why. Answers cleanly without a GPU or driver.

    Raises InvalidArgumentError for a negative device.
    """
    device = _lib.int32_arg("device", device)
    info = DeviceInfo()
    info.size = ctypes.sizeof(DeviceInfo)
    _lib.lib().dinf_device_query(device, ctypes.byref(info))
    out = {}
    for name, _ in DeviceInfo._fields_:
        if name == "size":
            continue
        value = getattr(info, name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        out[name] = value
    return out

