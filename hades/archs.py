"""The architectures of the grid: arch id -> "module:Class" of its token mixer.

A mixer registers itself by its file: every class under hades/models/mixers/ whose body says
`arch = "<id>"` (a string literal) is the mixer of that id. REGISTRY is read from those sources
with `ast` -- nothing is imported, so validating a config (the Snakefile, at parse time) loads no
torch -- and `hades.models.mixers.mixer_class` imports the named class lazily, so one broken
mixer does not break the others. `hades.config.ARCHS` (what a config may name) is its keys;
the schema's arch enum (hades/schemas/config.schema.yaml) mirrors them, held to them by
tests/test_lm.py. A new mixer: its file, its config fields (ModelConfig and the schema, the
enum included) and a config entry (docs/CONTRACTS.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

MIXERS_DIR = Path(__file__).parent / "models" / "mixers"
PACKAGE = "hades.models.mixers"


def _declared_arch(cls: ast.ClassDef) -> str | None:
    """The string literal assigned to `arch` in a class body, or None."""
    for stmt in cls.body:
        target, value = None, None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            target, value = stmt.target, stmt.value
        if isinstance(target, ast.Name) and target.id == "arch" and isinstance(value, ast.Constant) \
                and isinstance(value.value, str):
            return value.value
    return None


def discover(directory: Path = MIXERS_DIR, package: str = PACKAGE) -> dict[str, str]:
    """arch id -> "module:Class" for every class of `directory`'s modules that declares its arch
    (files in name order). Two classes declaring one id is an error that names both."""
    found: dict[str, str] = {}
    for path in sorted(directory.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and (arch := _declared_arch(node)) is not None:
                target = f"{package}.{path.stem}:{node.name}"
                if arch in found:
                    raise RuntimeError(f"arch {arch!r} is declared twice: {found[arch]} and {target}")
                found[arch] = target
    return found


REGISTRY: dict[str, str] = discover()

ARCHS: tuple[str, ...] = tuple(REGISTRY)
