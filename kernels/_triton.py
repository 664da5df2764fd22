"""How each op package finds its Triton implementation (`<package>/op.py`).

op.py imports Triton at module level, so on a machine without Triton (CI, a laptop) the import
fails and the package's public function uses its plain-torch reference instead.
"""

from __future__ import annotations

import importlib


def triton_op(package: str, name: str | None = None):
    """`package`.op's attribute `name` (the module itself when name is None), or None where
    `package`.op cannot be imported."""
    try:
        module = importlib.import_module(f"{package}.op")
    except ImportError:
        return None
    return module if name is None else getattr(module, name)


# -- Triton's Coalesce pass, skipped for kernels whose loads it cannot change ----------------

_NO_COALESCE: set[str] = set()


def without_coalesce(kernel):
    """Compile the @triton.jit `kernel` without Triton's TritonGPU Coalesce pass; returns it.

    Coalesce picks each load's and store's layout from the contiguity of its addresses. It costs
    O(memory ops x kernel size) (each memory op walks the slice of the whole kernel connected to
    it), so kernels that unroll hundreds of loads and stores over registers held in tuples
    (selective_scan_bwd_split_kernel: minutes at BLOCK_T 8) spend nearly all of their compile time
    in it. For a kernel whose every tensor has one element per thread (per-lane vectors of
    32 * num_warps elements, as there) Coalesce can only choose that same layout, so skipping it
    changes neither the code nor the results (that kernel's TTGIR compared with and without it:
    identical, docs/benchmarks.md section 8). Implemented with Triton's `knobs.runtime.add_stages_inspection_hook`
    (chained after any hook already set); where that API is missing, nothing changes."""
    _NO_COALESCE.add(kernel.__name__)
    _install_hook()
    return kernel


_HOOKED = False


def _install_hook() -> None:
    global _HOOKED
    if _HOOKED:
        return
    import threading

    try:
        from triton import knobs
        from triton._C.libtriton import passes
    except ImportError:
        return
    if not hasattr(knobs, "runtime") or not hasattr(knobs.runtime, "add_stages_inspection_hook"):
        return
    local = threading.local()
    add_coalesce = passes.ttgpuir.add_coalesce

    def maybe_coalesce(pm, *args, **kwargs):
        if not getattr(local, "skip", False):
            add_coalesce(pm, *args, **kwargs)

    passes.ttgpuir.add_coalesce = maybe_coalesce
    previous = knobs.runtime.add_stages_inspection_hook

    def hook(backend, stages, options, language, capability):
        if previous is not None:
            previous(backend, stages, options, language, capability)
        make_ttgir = stages.get("ttgir")
        if make_ttgir is None:
            return

        def ttgir(src, metadata):
            local.skip = src.get_entry_func_name() in _NO_COALESCE
            try:
                return make_ttgir(src, metadata)
            finally:
                local.skip = False

        stages["ttgir"] = ttgir

    knobs.runtime.add_stages_inspection_hook = hook
    _HOOKED = True
