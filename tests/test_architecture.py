"""The layers of the README's code map, checked on the source: imports point down, web and training never meet."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "maskclassifier"

# Lowest first; a module may import its own layer and the ones below. The README's "Code map" says the same.
LAYERS = {
    "leaves": {"errors", "categories", "tta", "capacity", "facebox", "resize", "images", "sidecar", "config",
               "cli", "corrections"},
    "classifier": {"pipeline", "learner_file", "fastai_backend", "onnx", "model", "mtcnn", "mtcnn_onnx", "faces",
                   "drawing", "export_onnx", "export_mtcnn", "quantize_onnx", "explain"},
    "web": {"web", "web.api", "web.assets", "web.errors", "web.inference", "web.pages", "web.presenters", "web.uploads",
            "web.worker"},
    "training": {"training", "training.dataset", "training.metrics", "training.reports", "training.learner",
                 "training.train", "training.evaluate", "training.repack", "training.renderings", "training.augment", "training.facecache", "train", "evaluate",
                 "dataset"},
    # the owner's local cleaner: its own layer beside web and training, which never import it
    "clean": {"clean", "clean.__main__", "clean.app", "clean.review", "clean.ranking", "clean.scoring"},
}
RANK = {"leaves": 0, "classifier": 1, "web": 2, "training": 2, "clean": 2}
SEPARATE = ("web", "training", "clean")  # the layers of rank 2 never import one another
BACKENDS = {"fastai_backend", "onnx"}  # only the classifier layer loads a model file


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> str:
    for layer, names in LAYERS.items():
        if name in names:
            return layer
    raise AssertionError(f"maskclassifier.{name} is in no layer: add it to LAYERS and to the README's code map")


def imports_of(path: Path) -> set[str]:
    """Every maskclassifier module the file imports, lazily (inside functions) or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskclassifier"):
            base = node.module.removeprefix("maskclassifier").lstrip(".")
            for alias in node.names:  # `from maskclassifier import metrics` names a module
                candidate = f"{base}.{alias.name}".lstrip(".")
                found.add(candidate if (PACKAGE / Path(*candidate.split("."))).with_suffix(".py").exists() else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name.removeprefix("maskclassifier.") for alias in node.names
                      if alias.name.startswith("maskclassifier.")}
    return found - {""}


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if module_name(path)}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_and_web_and_training_never_meet(name):
    layer = layer_of(name)
    for imported in imports_of(MODULES[name]):
        other = layer_of(imported)
        assert RANK[other] <= RANK[layer], f"{name} ({layer}) imports {imported} ({other}), a higher layer"
        assert layer == other or not {layer, other} <= set(SEPARATE), f"{name} ({layer}) imports {imported} ({other})"
        if imported in BACKENDS:
            assert layer == "classifier", f"{name} ({layer}) imports the backend {imported}"


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
    ("maskclassifier.training.metrics", "flask"),
    ("maskclassifier.train", "flask"),
    ("maskclassifier.web", "fastai"),
    ("maskclassifier.web", "torch"),
    ("maskclassifier", "flask"),
    ("maskclassifier.clean.app", "torch"),  # the cleaner's HTTP side: the model's scores come from clean.scoring
    ("maskclassifier.corrections", "numpy"),  # a leaf of the standard library only
])
def test_importing_a_layer_does_not_import_what_it_does_not_use(module, absent):
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"import {module} imported {absent}"


def test_the_readme_code_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    code_map = readme[readme.index("## Code map"):]
    code_map = code_map[:code_map.index("\n## ", 1)]
    for name, path in MODULES.items():
        assert f"`{path.relative_to(ROOT).as_posix()}`" in code_map, f"{path} is missing from the README's code map"
