"""Triton kernels checked in Triton's CPU interpreter, from a test file.

The interpreter has to be chosen (TRITON_INTERPRET=1) before Triton's `jit` wraps a kernel, so a
test file runs its checks in a subprocess of itself: it defines a function returning
[{"name", "err", "tol"}, ...], ends with `if __name__ == "__main__": interpreter_main(that
function)`, and its pytest test calls `run_in_interpreter(__file__)` under
`@needs_triton` (CI installs no Triton: those tests skip there).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (its CPU interpreter); CI has none")


def range_shim() -> None:
    """Triton 3.6's interpreter turns a loop bound held in a tensor (`range(n)` with a runtime n)
    into an int with int() on a 1-element array, which numpy >= 2.4 refuses: take the element."""
    from triton.runtime import interpreter

    scope = getattr(interpreter, "_LangPatchScope", None)  # (another Triton: nothing to patch)
    if scope is None:
        return
    set_attr = scope.set_attr

    def patched(self, obj, name, value):
        if name == "__index__":
            value = lambda t: int(t.handle.data.reshape(-1)[0])  # noqa: E731
        set_attr(self, obj, name, value)

    scope.set_attr = patched


def rel_err(a, ref) -> float:
    """Relative L2 error of a against ref in fp64; inf when a has a NaN or inf (a poisoned output
    that a kernel failed to write)."""
    import torch

    a, ref = a.detach().double(), ref.detach().double()
    return float("inf") if not torch.isfinite(a).all() else ((a - ref).norm() / ref.norm()).item()


def run_in_interpreter(test_file: str, timeout: int = 900) -> list[dict]:
    """Run `test_file` as a script with TRITON_INTERPRET=1; assert it succeeded and every check
    is within its tolerance (NaN fails); return the checks."""
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, test_file], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"interpreter run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    results = json.loads(r.stdout.strip().splitlines()[-1])
    bad = [c for c in results if not c["err"] <= c["tol"]]  # NaN fails too
    assert not bad, "\n".join(f"{c['name']}: {c['err']:.3e} > {c['tol']:.1e}" for c in bad)
    return results


def interpreter_main(checks) -> None:
    """The script side of `run_in_interpreter`: run checks(), print each to stderr and all as
    JSON on the last line of stdout."""
    import torch

    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1 (Triton's CPU interpreter)"
    torch.set_num_threads(1)
    results = checks()
    for c in results:
        print(f"{c['name']:<45} {c['err']:.3e}  (tol {c['tol']:.0e})", file=sys.stderr)
    print(json.dumps(results))
