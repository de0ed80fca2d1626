"""The import direction of ../shared/spec/layout.md, read from the source with `ast`.

Every import counts, module-level or inside a function, so a function-level import cannot
hide an edge."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "secoustic_jax"


def _imports() -> dict[str, set[str]]:
    """secoustic_jax module (dotted, relative to the package) -> secoustic_jax modules it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__") or "__init__"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m.removeprefix("secoustic_jax.") for m in found
                       if m.startswith("secoustic_jax.")}
    return graph


GRAPH = _imports()


def _top(module: str) -> str:
    return module.split(".")[0]


def _edges(src_tops: tuple[str, ...], dst_tops: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _top(m) in src_tops
                  for d in deps if _top(d) in dst_tops and _top(d) != _top(m))


@pytest.mark.parametrize("src, dst", [
    (("layers", "model"), ("kernels",)),
    (("model",), ("training", "checkpoint", "streaming", "api")),
    (("data",), ("model", "eval")),
    (("training",), ("eval",)),
    (("ops",), ("layers", "model", "training", "streaming", "eval", "data", "api")),
])
def test_forbidden_edges(src, dst):
    assert _edges(src, dst) == []


def test_only_ops_imports_the_kernels():
    users = {_top(m) for m, deps in GRAPH.items() if any(_top(d) == "kernels" for d in deps)}
    assert users - {"kernels"} == {"ops"}


def test_no_library_module_imports_a_cli():
    clis = {"cli", "commands", "demo"}
    offenders = [e for e in _edges(tuple({_top(m) for m in GRAPH} - clis - {"eval"}), tuple(clis))]
    assert offenders == []


def test_the_graph_sees_function_level_imports():
    # Control: training/model.py imports the codec inside a function only; the walker must
    # still see that edge (a module-level-only walker would miss it).
    assert "model.codec" in GRAPH["training.model"]
    assert GRAPH["ops.backend"] >= {"kernels"}
