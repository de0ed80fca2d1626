"""The import direction of ../shared/spec/layout.md, read from the source with `ast`.

Every import counts, module-level or inside a function, so a function-level import cannot
hide an edge."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "secoustic_jax"


def _source_imports(source: str, filename: str = "<string>") -> set[str]:
    """secoustic_jax modules (dotted, relative to the package) one source file imports,
    at any depth: module level, inside functions, classes or conditionals."""
    found = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m.removeprefix("secoustic_jax.") for m in found if m.startswith("secoustic_jax.")}


def _imports() -> dict[str, set[str]]:
    """secoustic_jax module (dotted, relative to the package) -> secoustic_jax modules it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__") or "__init__"
        graph[name] = _source_imports(path.read_text(), str(path))
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
    # Control: the walker must see an import inside a function (and deeper: a method, a
    # conditional), where a module-level-only walker would miss it.
    source = (
        "import numpy as np\n"
        "from secoustic_jax.config.model import CodecConfig\n"
        "\n"
        "def build(cfg):\n"
        "    from secoustic_jax.model.codec import SecoustiCodec\n"
        "    return SecoustiCodec(cfg)\n"
        "\n"
        "class Runner:\n"
        "    def run(self):\n"
        "        if True:\n"
        "            import secoustic_jax.eval.metrics\n"
        "            from . import relative_is_ignored\n"
    )
    found = _source_imports(source)
    assert {"model.codec", "model.codec.SecoustiCodec", "eval.metrics"} <= found
    assert "config.model" in found and not any("relative" in m for m in found)
    assert GRAPH["ops.backend"] >= {"kernels"}


def _function_level_imports() -> list[tuple[str, int, str]]:
    """(file, line, source line) of every import inside a function of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [(str(path.relative_to(PACKAGE)), n.lineno, lines[n.lineno - 1])
                          for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def test_function_level_imports_are_only_the_annotated_exceptions():
    # Imports are true at module level; the exceptions (optional heavy dependencies, a CLI
    # command's body, a cycle) say which they are on the line itself.
    found = _function_level_imports()
    assert found, "the walker found no function-level import at all"  # control: some exist
    bare = [f"{f}:{n}: {line.strip()}" for f, n, line in found
            if not any(tag in line for tag in ("# optional:", "# CLI:", "# cycle:"))]
    assert bare == []
