"""The backend's module graph, read from the source: no import cycles anywhere in edgellm,
and the layering the engine seam promises.

Every import statement counts, also those inside functions and under TYPE_CHECKING: an
import moved into a function hides a cycle from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import edgellm

PACKAGE = Path(edgellm.__file__).parent  # the tree under test (PYTHONPATH), not a copy


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _known(target: str, known: set[str]) -> str | None:
    """The module an import of `target` executes last: itself, else its package."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _targets(name: str, path: Path, known: set[str]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [_known(alias.name, known) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from this package, `level - 1` packages up
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from a import b` runs module a.b when there is one, else only a.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _known(base, known)
                for alias in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t is not None and t != name)


def import_graph() -> dict[str, set[str]]:
    """edgellm module -> the edgellm modules it imports."""
    modules = _modules()
    known = set(modules)
    return {name: set(_targets(name, path, known)) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for root in sorted(graph):
        if root not in state and (cycle := visit(root)):
            return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_find_cycle_finds_cycles_and_only_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"x": {"y"}, "y": {"y"}}) == ["y", "y"]


def test_graph_sees_every_kind_of_import(graph) -> None:
    """The reader must see what the checks below rely on, or they pass vacuously."""
    assert len(graph) > 50
    # top level, `from package import module`, inside a function, under TYPE_CHECKING
    assert "edgellm.engine.torch.stage" in graph["edgellm.cluster.actor"]
    assert "edgellm.kv.handoff" in graph["edgellm.kv.prefix"]
    assert "edgellm.cluster.disaggregated.driver" in graph["edgellm.cluster.manager"]
    assert "edgellm.kv.prefix" in graph["edgellm.engine.base"]


def test_no_import_cycles(graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_kv_imports_no_engine_cluster_or_server(graph) -> None:
    """kv works on a StageCache protocol; engines import kv, never the reverse."""
    upper = ("edgellm.engine", "edgellm.cluster", "edgellm.server")
    wrong = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("edgellm.kv")
        for target in targets
        if target.startswith(upper)
    }
    assert wrong == set()


def test_only_the_engine_package_names_a_concrete_engine(graph) -> None:
    """Everything else goes through edgellm.engine.base and the registry."""
    concrete = "edgellm.engine.torch.engine"
    users = {name for name, targets in graph.items() if concrete in targets}
    assert {u for u in users if not u.startswith("edgellm.engine.")} == set()


def test_the_server_imports_nothing_heavy_before_it_serves() -> None:
    """The backend serves while torch and transformers import in the background
    (edgellm.warm): the server's own modules, imported whole, leave them (and Ray,
    which only a cluster loads) unimported. One module-level `import torch` on the path
    would put seconds back on every backend's start and every cold split's first token."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "safetensors", "numpy", "ray", "vllm")
    probe = (
        "import sys, edgellm.server.__main__, edgellm.server.app; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
