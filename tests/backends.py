"""Running a snippet under another Keras backend, in a fresh interpreter.

Keras picks its backend once per process, so a JAX check runs in a
subprocess with ``KERAS_BACKEND=jax``. The snippet prints what the test then
compares; it is skipped with a reason when JAX is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import REPO_ROOT


def run_under_jax(code: str, timeout: float = 300.0) -> str:
    """Runs ``code`` with ``KERAS_BACKEND=jax``; returns its stdout.

    Raises:
        AssertionError: the snippet failed; its stderr is in the message.
    """
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed (pip install -e '.[test]' installs it)")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert completed.returncode == 0, f"JAX snippet failed:\n{completed.stderr[-4000:]}"
    return completed.stdout
