"""Imports point one way (docs/CONTRACTS.md): kernels -> models, data -> train, eval -> analysis
-> workflow, each part importing only those below it. Read from the source (ast), nothing is
imported, so a violation fails here even where the import sits inside a function."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hades.archs import REGISTRY

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for top in ("hades", "kernels") for p in (REPO / top).rglob("*.py"))

# bottom to top; a module of one layer imports nothing of a layer above it
LAYERS = (
    ("kernels",),
    ("hades.models", "hades.data"),
    ("hades.train", "hades.eval"),
    ("hades.analysis",),
)


def module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, nested ones too. `from X import
    y` yields X and X.y (y may be a submodule); relative imports resolve against `module`."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            found.append((node.lineno, origin))
            found += [(node.lineno, f"{origin}.{a.name}") for a in node.names if a.name != "*"]
    return found


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offending(files, forbidden) -> list[str]:
    """'path:line imports name' for each import in `files` that `forbidden(name)` rejects."""
    bad = []
    for path in files:
        for line, name in imports_of(path.read_text(), module_of(path), path.name == "__init__.py"):
            if forbidden(name):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return sorted(set(bad))


def files_of(prefix: str) -> list[Path]:
    return [p for p in SOURCES if is_under(module_of(p), prefix)]


def test_the_import_reader_resolves_relative_and_nested_imports():
    src = "from ..layers import ShortConv\nfrom . import mamba\ndef f():\n    import snakemake.io\n"
    names = {n for _, n in imports_of(src, "hades.models.mixers.hades")}
    assert {"hades.models.layers", "hades.models.mixers.mamba", "snakemake.io"} <= names
    assert imports_of("from .base import Mixer", "hades.models.mixers", is_package=True)[0] == (
        1,
        "hades.models.mixers.base",
    )


def test_kernels_import_nothing_of_hades():
    bad = offending(files_of("kernels"), lambda n: is_under(n, "hades"))
    assert not bad, "kernels/ stands below hades/:\n" + "\n".join(bad)


def test_library_code_does_not_import_snakemake():
    bad = offending(SOURCES, lambda n: is_under(n, "snakemake"))
    assert not bad, "only the workflow knows Snakemake:\n" + "\n".join(bad)


def test_tracking_does_not_import_training():
    bad = offending([REPO / "hades" / "tracking.py"], lambda n: is_under(n, "hades.train"))
    assert not bad, "the tracking store stands below the trainer that uses it:\n" + "\n".join(bad)


def test_mixers_are_peers():
    """No mixer imports another (they share base.py, ssm_init.py and the references under kernels/ instead), so a
    mixer's file can be changed, or dropped from the registry, alone."""
    mixers = {target.split(":")[0] for target in REGISTRY.values()}
    for module in sorted(mixers):
        path = REPO / (module.replace(".", "/") + ".py")
        others = mixers - {module}
        bad = offending([path], lambda n, others=others: n in others)
        assert not bad, "mixers are peers:\n" + "\n".join(bad)


@pytest.mark.parametrize("level", range(len(LAYERS) - 1), ids=lambda i: "+".join(LAYERS[i]))
def test_no_layer_imports_one_above_it(level):
    above = [p for layer in LAYERS[level + 1 :] for p in layer]
    files = [f for prefix in LAYERS[level] for f in files_of(prefix)]
    bad = offending(files, lambda n: any(is_under(n, p) for p in above))
    assert not bad, f"{' / '.join(LAYERS[level])} import upward:\n" + "\n".join(bad)


def test_the_workflow_parses_without_torch():
    """The hades modules the rule files import at parse time import no torch (common.smk:
    `snakemake -n` must stay fast and offline): config validation reads the arch ids from
    hades/archs.py (which reads the mixer files as text), never by importing the mixers."""
    pattern = re.compile(r"^\s*(?:from\s+(hades[\w.]*)\s+import|import\s+(hades[\w.]*))", re.M)
    modules = sorted(
        {
            a or b
            for smk in (REPO / "workflow" / "rules").glob("*.smk")
            for a, b in pattern.findall(smk.read_text())
        }
    )
    assert "hades.config" in modules, modules
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", f"importing {modules} loads {out.stdout.strip()}"
