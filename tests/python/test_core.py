"""Core of the binding: loading, version, status strings, errors, dtypes, device query."""

import ctypes
import os
import pickle
import shutil
import threading

import pytest

import deepinfra
from deepinfra import _lib
from conftest import PYTHON_DIR, REPO, run_python

SONAME = "libdeepinfra.so.0"

STATUS_STRINGS = {
    0: "ok",
    1: "invalid argument",
    2: "unsupported",
    3: "out of memory",
    4: "CUDA error",
    5: "NCCL error",
    6: "JIT error",
    7: "timeout",
    8: "internal error",
}

STATUS_CLASSES = {
    1: deepinfra.InvalidArgumentError,
    2: deepinfra.UnsupportedError,
    3: deepinfra.OutOfMemoryError,
    4: deepinfra.CudaError,
    5: deepinfra.NcclError,
    6: deepinfra.JitError,
    7: deepinfra.DeepInfraTimeoutError,
    8: deepinfra.InternalError,
}

DTYPES = {  # value: (name, bytes)
    0: ("float32", 4),
    1: ("float64", 8),
    2: ("float16", 2),
    3: ("bfloat16", 2),
    4: ("float8_e4m3fn", 1),
    5: ("float8_e5m2", 1),
    6: ("int8", 1),
    7: ("uint8", 1),
    8: ("int32", 4),
    9: ("int64", 8),
}


# ------------------------------------------------------------------ version


def test_package_version_constant():
    assert deepinfra.__version__ == "0.1.0"
    assert _lib.PACKAGE_VERSION_CODE == 100


def test_library_version():
    v = deepinfra.version()
    assert v in ("0.1.0+cuda", "0.1.0+cpu")
    assert v.split("+")[0] == deepinfra.__version__
    assert deepinfra.version_code() == 100


def test_version_mismatch_is_a_clear_error():
    _lib._check_version(100, "/x/libdeepinfra.so.0")  # the expected version passes
    with pytest.raises(deepinfra.LibraryVersionError) as info:
        _lib._check_version(10203, "/x/libdeepinfra.so.0")
    msg = str(info.value)
    assert "/x/libdeepinfra.so.0" in msg and "1.2.3" in msg and "0.1.0" in msg
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, deepinfra.DeepInfraError)


def test_library_path_is_the_build_tree():
    path = deepinfra.library_path()
    assert os.path.isabs(path) and os.path.basename(path) == SONAME and os.path.exists(path)
    if os.environ.get("DEEPINFRA_LIBRARY_PATH"):
        return
    # os.path.join keeps an absolute DINF_BUILD_DIR as it is.
    build = os.path.join(REPO, os.environ.get("DINF_BUILD_DIR") or "build")
    assert path == os.path.abspath(os.path.join(build, "lib", SONAME))


# ------------------------------------------------------------------ loading


def test_import_loads_nothing_and_needs_no_library():
    r = run_python(
        "import sys, deepinfra\n"
        "assert deepinfra._lib._LIB is None\n"
        "assert 'numpy' not in sys.modules\n"
        "print(deepinfra.__version__)\n"
        "try:\n"
        "    deepinfra.version()\n"
        "except deepinfra.LibraryNotFoundError as e:\n"
        "    assert isinstance(e, ImportError) and isinstance(e, deepinfra.DeepInfraError)\n"
        "    print('ERR', e)\n",
        {"DEEPINFRA_LIBRARY_PATH": "/nonexistent/dir/libdeepinfra.so.0"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("0.1.0\nERR ")
    assert "DEEPINFRA_LIBRARY_PATH=/nonexistent/dir/libdeepinfra.so.0" in r.stdout
    assert "not found" in r.stdout


def test_library_path_env_file_and_directory():
    lib_file = deepinfra.library_path()
    lib_dir = os.path.dirname(lib_file)
    code = "import deepinfra; print(deepinfra.library_path()); print(deepinfra.version())"
    for value in (lib_file, lib_dir):
        r = run_python(code, {"DEEPINFRA_LIBRARY_PATH": value})
        assert r.returncode == 0, r.stderr
        path, version = r.stdout.split()
        assert path == os.path.join(lib_dir, SONAME)
        assert version == deepinfra.version()


def test_library_path_env_wins_over_build_dir():
    lib_dir = os.path.dirname(deepinfra.library_path())
    r = run_python(
        "import deepinfra; print(deepinfra.library_path())",
        {"DEEPINFRA_LIBRARY_PATH": lib_dir, "DINF_BUILD_DIR": "no-such-build-dir"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(lib_dir, SONAME)


def test_build_dir_env_absolute_relative_and_missing(tmp_path):
    lib_dir = os.path.dirname(deepinfra.library_path())
    build_dir = os.path.dirname(lib_dir)
    code = "import deepinfra; print(deepinfra.library_path())"
    r = run_python(code, {"DINF_BUILD_DIR": build_dir})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == os.path.join(lib_dir, SONAME)
    if os.path.commonpath([build_dir, REPO]) == REPO:
        # Relative to the repository root, whatever the working directory.
        r = run_python(code, {"DINF_BUILD_DIR": os.path.relpath(build_dir, REPO)}, cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == os.path.join(lib_dir, SONAME)
    # A build directory that is named but absent is an error, not a fallback.
    r = run_python(
        "import deepinfra\n"
        "try:\n"
        "    deepinfra.version()\n"
        "except deepinfra.LibraryNotFoundError as e:\n"
        "    print(e)\n",
        {"DINF_BUILD_DIR": "no-such-build-dir"},
    )
    assert r.returncode == 0, r.stderr
    assert "DINF_BUILD_DIR=no-such-build-dir" in r.stdout
    assert os.path.join(REPO, "no-such-build-dir", "lib", SONAME) in r.stdout


def test_installed_location(tmp_path):
    """`make install` writes deepinfra/_installed.py with LIBDIR next to the package."""
    lib_dir = tmp_path / "prefix" / "lib"
    lib_dir.mkdir(parents=True)
    shutil.copy(deepinfra.library_path(), lib_dir / SONAME)
    site = tmp_path / "site"
    pkg = site / "deepinfra"
    pkg.mkdir(parents=True)
    for name in os.listdir(os.path.join(PYTHON_DIR, "deepinfra")):
        if name.endswith(".py") and name != "_installed.py":
            shutil.copy(os.path.join(PYTHON_DIR, "deepinfra", name), pkg / name)
    (pkg / "_installed.py").write_text('LIBDIR = "%s"\n' % lib_dir)
    r = run_python(
        "import deepinfra; print(deepinfra.library_path()); print(deepinfra.version())",
        pythonpath=str(site),
        cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    path, version = r.stdout.split()
    assert path == str(lib_dir / SONAME)
    assert version == deepinfra.version()


def test_find_library_fallback(tmp_path):
    """Last resort: the dynamic loader's paths (here LD_LIBRARY_PATH)."""
    lib_dir = os.path.dirname(deepinfra.library_path())
    site = tmp_path / "site"
    pkg = site / "deepinfra"
    pkg.mkdir(parents=True)
    for name in os.listdir(os.path.join(PYTHON_DIR, "deepinfra")):
        if name.endswith(".py") and name != "_installed.py":
            shutil.copy(os.path.join(PYTHON_DIR, "deepinfra", name), pkg / name)
    r = run_python(
        "import ctypes.util, deepinfra\n"
        "if ctypes.util.find_library('deepinfra') is None:\n"
        "    print('SKIP')\n"
        "else:\n"
        "    print(deepinfra.library_path())\n",
        {"LD_LIBRARY_PATH": lib_dir},
        pythonpath=str(site),
        cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() == "SKIP":
        pytest.skip("ctypes.util.find_library cannot search LD_LIBRARY_PATH here (no ld/gcc)")
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(deepinfra.library_path())


def test_not_found_lists_the_places_tried(tmp_path):
    site = tmp_path / "site"
    pkg = site / "deepinfra"
    pkg.mkdir(parents=True)
    for name in os.listdir(os.path.join(PYTHON_DIR, "deepinfra")):
        if name.endswith(".py") and name != "_installed.py":
            shutil.copy(os.path.join(PYTHON_DIR, "deepinfra", name), pkg / name)
    r = run_python(
        "import deepinfra\n"
        "from unittest import mock\n"
        "import ctypes.util\n"
        "with mock.patch.object(ctypes.util, 'find_library', return_value=None):\n"
        "    try:\n"
        "        deepinfra.version()\n"
        "    except deepinfra.LibraryNotFoundError as e:\n"
        "        print(e)\n",
        pythonpath=str(site),
        cwd=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "build tree" in out and str(tmp_path / "build" / "lib" / SONAME) in out
    assert "package directory" in out and "_installed.py" in out and "find_library" in out


def test_unloadable_file_is_an_error(tmp_path):
    bogus = tmp_path / SONAME
    bogus.write_text("not an ELF file\n")
    r = run_python(
        "import deepinfra\n"
        "try:\n"
        "    deepinfra.version()\n"
        "except deepinfra.LibraryNotFoundError as e:\n"
        "    print(e)\n",
        {"DEEPINFRA_LIBRARY_PATH": str(bogus)},
    )
    assert r.returncode == 0, r.stderr
    assert "failed to load" in r.stdout and str(bogus) in r.stdout


# ------------------------------------------------------------------ status and errors


def test_status_strings():
    for code, text in STATUS_STRINGS.items():
        assert deepinfra.status_string(code) == text
        assert deepinfra.status_string(deepinfra.Status(code)) == text
    for code in (9, 100, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**70):
        assert deepinfra.status_string(code) == "unknown status"


def test_status_enum_values():
    assert [int(s) for s in deepinfra.Status] == list(range(9))
    assert deepinfra.Status.INVALID_ARGUMENT == 1 and deepinfra.Status.INTERNAL == 8


def test_exception_hierarchy():
    for cls in STATUS_CLASSES.values():
        assert issubclass(cls, deepinfra.DeepInfraError)
        assert issubclass(cls, RuntimeError)
    assert issubclass(deepinfra.InvalidArgumentError, ValueError)
    assert issubclass(deepinfra.OutOfMemoryError, MemoryError)
    assert issubclass(deepinfra.DeepInfraTimeoutError, TimeoutError)
    assert issubclass(deepinfra.LibraryNotFoundError, ImportError)
    assert issubclass(deepinfra.LibraryVersionError, deepinfra.LibraryError)


@pytest.mark.parametrize("code", sorted(STATUS_CLASSES))
def test_error_from_status(code):
    e = _lib.error_from_status(code, "dinf_x: arg=3 is wrong")
    assert type(e) is STATUS_CLASSES[code]
    assert e.status == code and isinstance(e.status, deepinfra.Status)
    assert e.message == "dinf_x: arg=3 is wrong" == str(e)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is type(e) and back.message == e.message and back.status == e.status


def test_error_from_unknown_status():
    e = _lib.error_from_status(42, "odd")
    assert type(e) is deepinfra.DeepInfraError and e.status == 42 and str(e) == "odd"


def test_failed_call_raises_with_last_error():
    with pytest.raises(deepinfra.InvalidArgumentError) as info:
        deepinfra.dtype_size(99)
    e = info.value
    assert e.status == deepinfra.Status.INVALID_ARGUMENT
    assert e.message.startswith("dinf_dtype_size: ")
    assert "dtype=99" in e.message
    assert deepinfra.last_error() == e.message


def test_last_error_is_thread_local():
    with pytest.raises(deepinfra.InvalidArgumentError):
        deepinfra.dtype_size(77)
    main_message = deepinfra.last_error()
    seen = {}

    def worker():
        seen["fresh"] = deepinfra.last_error()
        try:
            deepinfra.device_query(-5)
        except deepinfra.InvalidArgumentError as e:
            seen["error"] = e.message
        seen["after"] = deepinfra.last_error()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["fresh"] == ""
    assert "device=-5" in seen["error"] and seen["after"] == seen["error"]
    assert deepinfra.last_error() == main_message  # untouched by the other thread


def test_last_error_kept_across_successful_calls():
    with pytest.raises(deepinfra.InvalidArgumentError):
        deepinfra.dtype_size(12)
    msg = deepinfra.last_error()
    assert deepinfra.dtype_size(0) == 4
    assert deepinfra.last_error() == msg


# ------------------------------------------------------------------ dtypes


def test_dtypes():
    for value, (name, size) in DTYPES.items():
        assert deepinfra.dtype_name(value) == name
        assert deepinfra.dtype_size(value) == size
        assert deepinfra.DType(value).value == value
    assert [int(d) for d in deepinfra.DType] == list(range(10))
    for bad in (10, -1, 2**40):
        assert deepinfra.dtype_name(bad) == "unknown"
    with pytest.raises(deepinfra.InvalidArgumentError, match="dtype=10"):
        deepinfra.dtype_size(10)
    with pytest.raises(deepinfra.InvalidArgumentError, match="does not fit"):
        deepinfra.dtype_size(2**40)


def test_dtype_names_match_numpy_and_ml_dtypes():
    np = pytest.importorskip("numpy")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for value, (name, size) in DTYPES.items():
        dt = np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)
        assert dt.itemsize == size, name


# ------------------------------------------------------------------ device query


def test_device_info_struct_layout():
    info = _lib.DeviceInfo
    assert ctypes.sizeof(info) == 4 + 9 * 4 + 8 + 8 + 256 + 512
    assert info.total_memory_bytes.offset == 40
    assert info.name.offset == 56 and info.reason.offset == 312


def test_device_query():
    d = deepinfra.device_query()
    expected_keys = {
        "built_with_cuda", "usable", "device_count", "device", "cc_major", "cc_minor",
        "sm_count", "runtime_version", "driver_version", "total_memory_bytes",
        "shared_memory_per_block_optin_bytes", "name", "reason",
    }
    assert set(d) == expected_keys
    assert d["device"] == 0
    assert d["built_with_cuda"] in (0, 1)
    assert d["built_with_cuda"] == (1 if deepinfra.version().endswith("+cuda") else 0)
    assert d["usable"] in (0, 1)
    assert d["device_count"] >= 0
    assert isinstance(d["name"], str) and isinstance(d["reason"], str)
    if d["usable"]:
        assert (d["cc_major"], d["cc_minor"]) == (9, 0)
        assert d["name"] and d["sm_count"] > 0 and d["total_memory_bytes"] > 0
        assert d["shared_memory_per_block_optin_bytes"] > 0
        assert d["reason"] == ""
        assert d["device_count"] >= 1 and d["built_with_cuda"] == 1
    else:
        assert d["reason"].strip() != ""
    if not d["built_with_cuda"]:
        assert d["usable"] == 0 and d["runtime_version"] == 0


def test_device_query_absent_device():
    count = deepinfra.device_query()["device_count"]
    d = deepinfra.device_query(count + 3)
    assert d["usable"] == 0 and d["reason"] != "" and d["device"] == count + 3


def test_device_query_bad_arguments():
    with pytest.raises(deepinfra.InvalidArgumentError, match="device=-1"):
        deepinfra.device_query(-1)
    for bad in (2**31, -(2**31) - 1, 2**64):
        with pytest.raises(deepinfra.InvalidArgumentError, match="does not fit"):
            deepinfra.device_query(bad)
    for bad in (True, 1.0, "0", None):
        with pytest.raises(deepinfra.InvalidArgumentError, match="must be an integer"):
            deepinfra.device_query(bad)
