"""Shared set-up of the Python binding tests.

Run from the repository root after `make`:

    DINF_BUILD_DIR=build python3 -m pytest tests/python -q

The package is imported from python/ of this checkout (put first on
sys.path), and the library is found by the package's own lookup
(DINF_BUILD_DIR, else build/).
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_DIR = os.path.join(REPO, "python")
if sys.path[:1] != [PYTHON_DIR]:
    sys.path.insert(0, PYTHON_DIR)

import deepinfra  # noqa: E402

BUILD_DIR = os.path.join(REPO, os.environ.get("DINF_BUILD_DIR", "build"))
_STAMP_KEYS = ("CUDA", "SAN", "CC", "CXX", "NVCC", "GENCODE", "CUDARTLIB")


def build_make_args(build=BUILD_DIR):
    """The make arguments that name the build under test and its configuration.

    make writes the configuration into <build>/config.stamp (CUDA=1 SAN=0
    CC=gcc ... GENCODE=-gencode arch=... CUDARTLIB=...) and rebuilds the whole
    tree when it changes; a test that runs make on that build must pass the
    same variables, or make's defaults (CUDA=1 wherever nvcc exists) would
    reconfigure a CPU-only build and rebuild the library under test.
    """
    args = ["BUILDDIR=" + build]
    try:
        with open(os.path.join(build, "config.stamp")) as f:
            stamp = f.read().strip()
    except OSError:
        return args
    keys = "|".join(_STAMP_KEYS)
    for key, value in re.findall(r"(?:^| )(%s)=(.*?)(?= (?:%s)=|$)" % (keys, keys), stamp):
        args.append("%s=%s" % (key, value))
    return args


def library_has_cuda():
    """Whether the library under test was built with CUDA: its version ends
    in +cuda (a make CUDA=0 build's in +cpu, and it ships no GPU kernels)."""
    return deepinfra.version().endswith("+cuda")


@pytest.fixture(scope="session", autouse=True)
def loaded_library():
    """Fail every test with the lookup's own message when the library is missing."""
    try:
        return deepinfra.library_path()
    except deepinfra.LibraryError as e:
        pytest.fail("libdeepinfra is not loadable (run `make` first): %s" % e, pytrace=False)


def run_python(code, env_overrides=None, pythonpath=PYTHON_DIR, cwd=None):
    """Run `code` in a fresh interpreter with only the lookup variables we set.

    Returns the CompletedProcess (stdout/stderr as text). A fresh process
    gives a fresh library cache and thread-local state.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEEPINFRA_LIBRARY_PATH", "DINF_BUILD_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = pythonpath
    env.update(env_overrides or {})
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only; the scripts take well under a second
    )
