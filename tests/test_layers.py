"""The package map's rules (docs/design.md): no import cycle, no upward import, faces that import no torch.

`python -m pytest tests/test_layers.py` checks them; every `from .x import y` of the package, at the top
of a module or inside a function, is an edge of the graph.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "textvae"
# Lower levels never import higher ones; a package imports its own modules and lower levels only.
LEVELS = {
    "lazy": 0, "run_files": 0, "distributed": 0, "config_fields": 0, "decoding": 0,
    "models": 1,
    "data": 2,
    "checkpointing": 3, "generation": 3, "plotting": 3,
    "priors": 4,
    "evaluation": 5,
    "training": 6, "latent": 6,
    "pipeline": 7,
    "app": 8,
    "cli": 9,
    "__init__": 10, "__main__": 10,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports (anywhere in its code)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                targets |= (
                    {f"{target}.{alias.name}" for alias in node.names} if node.module is None else {target}
                )
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                targets |= {n for n in names if n and n.split(".")[0] == "textvae"}
        graph[name] = targets
    modules = set(graph)
    return {name: {t if t in modules else t.rsplit(".", 1)[0] for t in targets} & modules - {name}
            for name, targets in graph.items()}  # fmt: skip


def unit(module: str) -> str:
    """The package or root module a module belongs to: textvae.training.step -> training."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def test_every_package_and_root_module_has_a_level():
    assert {unit(name) for name in import_graph()} <= set(LEVELS)


def test_no_module_imports_a_higher_level_or_a_package_beside_it():
    upward = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        if unit(target) != unit(name) and LEVELS[unit(target)] >= LEVELS[unit(name)]
    ]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_cycle():
    graph, state, path, cycles = import_graph(), {}, [], []

    def visit(name):
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(cycles)


FACES = ["textvae", "textvae.models", "textvae.data", "textvae.training", "textvae.priors",
         "textvae.evaluation", "textvae.latent", "textvae.app"]  # fmt: skip


@pytest.mark.parametrize("face", FACES)
def test_each_face_imports_no_torch_and_every_name_it_lists_resolves(face):
    check = f"import sys, {face}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    module = importlib.import_module(face)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{face}.{name}"
