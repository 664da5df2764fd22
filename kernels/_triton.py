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
