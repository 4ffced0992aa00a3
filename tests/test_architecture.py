"""The layers of the code map (docs/architecture.md) are the package's folders, checked on the source: imports
point down, and web, training, the cleaner and the model-file writers never meet."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "maskclassifier"

# A module's layer is its folder; lowest first, a module may import its own layer and the ones below.
# docs/architecture.md ("Code map", "Layer rules") says the same.
RANK = {
    "core": 0,  # the leaves: Pillow and NumPy at most
    "classifier": 1,  # the only layer that loads model files
    "web": 2, "training": 2, "clean": 2,
    "modelfiles": 2,  # the offline writers of models/: they write the backends' formats, so they import the backends
    "commands": 3,  # the command shims at the package's root (python -m maskclassifier.train, ...)
}
SEPARATE = ("web", "training", "clean", "modelfiles")  # the layers of rank 2 never import one another
BACKENDS = {"classifier.fastai_backend", "classifier.onnx_backend"}
BACKEND_USERS = {"classifier", "modelfiles"}  # only these load (or write) a model file


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str:
    folder = name.split(".")[0]
    layer = folder if (PACKAGE / folder).is_dir() else "commands"
    assert layer in RANK, f"maskclassifier/{folder}/ is in no layer: add it to RANK and to docs/architecture.md"
    return layer


def is_module(name: str) -> bool:
    path = PACKAGE / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """Every maskclassifier module the file imports, lazily (inside functions) or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskclassifier"):
            base = node.module.removeprefix("maskclassifier").lstrip(".")
            for alias in node.names:  # `from maskclassifier import metrics` names a module
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if is_module(candidate) else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("maskclassifier.") for alias in node.names
                      if alias.name.startswith("maskclassifier.")}
    return found - {""}


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if module_name(path)}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_and_the_separate_layers_never_meet(name):
    layer = layer_of(name)
    for imported in imports_of(MODULES[name]):
        assert imported in MODULES, f"{name} imports maskclassifier.{imported}, which does not exist"
        other = layer_of(imported)
        assert RANK[other] <= RANK[layer], f"{name} ({layer}) imports {imported} ({other}), a higher layer"
        assert layer == other or not {layer, other} <= set(SEPARATE), f"{name} ({layer}) imports {imported} ({other})"
        if imported in BACKENDS:
            assert layer in BACKEND_USERS, f"{name} ({layer}) imports the backend {imported}"


def test_there_is_no_import_cycle():
    graph = {name: imports_of(path) & set(MODULES) for name, path in MODULES.items()}
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in visiting, "import cycle: " + " -> ".join(trail + [name])
        if name in done:
            return
        visiting.add(name)
        for imported in graph[name]:
            if imported != name and not name.startswith(imported + "."):  # a package's own __init__
                visit(imported, trail + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("module,absent", [
    ("maskclassifier.training", "flask"),
    pytest.param("maskclassifier.training.metrics", "flask", marks=pytest.mark.slow),  # imports scikit-learn
    pytest.param("maskclassifier.train", "flask", marks=pytest.mark.slow),  # imports fastai and torch
    ("maskclassifier.web", "fastai"),
    ("maskclassifier.web", "torch"),
    ("maskclassifier", "flask"),
    ("maskclassifier.clean.app", "torch"),  # the cleaner's HTTP side: the model's scores come from clean.scoring
    ("maskclassifier.core.corrections", "numpy"),  # a leaf of the standard library only
])
def test_importing_a_layer_does_not_import_what_it_does_not_use(module, absent):
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"import {module} imported {absent}"


def test_the_code_map_describes_every_folder():
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    code_map = architecture[architecture.index("## Code map"):]
    code_map = code_map[:code_map.index("\n## ", 1)]
    folders = {path.parent for path in PACKAGE.rglob("*.py")} - {PACKAGE}
    for folder in sorted(folders):
        described = f"`{folder.relative_to(ROOT).as_posix()}/`" in code_map
        assert described, f"{folder} is missing from the code map"
    for path in PACKAGE.glob("*.py"):  # the command shims at the root
        assert f"`{path.relative_to(ROOT).as_posix()}`" in code_map, f"{path} is missing from the code map"
