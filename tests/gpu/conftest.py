"""GPU tests: marked `gpu`, skipped cleanly where CUDA (or Triton) is missing."""

from __future__ import annotations

import json
import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    skip = None
    if os.environ.get("TRITON_INTERPRET") == "1":
        pass  # Triton's CPU interpreter: run them on the CPU (debugging)
    elif not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
    else:
        try:
            import triton  # noqa: F401
        except ImportError:
            skip = pytest.mark.skip(reason="needs Triton")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch):
    """Every kernel output buffer starts as NaN: an unwritten tile fails the comparison."""
    if not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
        return
    import kernels._buffers  # every op's output buffers come from here

    monkeypatch.setattr(kernels._buffers, "POISON_OUTPUTS", True)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("HADES_GPU_TEST_LOG")
    if path:
        from ._tol import RECORD

        with open(f"{path}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}", "w") as f:
            json.dump(RECORD, f, indent=1)
