"""No import cycles among the modules of `keras_adp`.

The import graph is read from the source with `ast`, imports inside
functions and under `if TYPE_CHECKING:` included, so a cycle hidden behind
a deferred import is still reported. Run this file as a script to print the
graph's cycles.
"""

import ast
import pathlib
import sys

PACKAGE = "keras_adp"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> source file, for every module of the package."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement may load (submodules included)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        if not is_package:
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its source)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node in ast.walk(tree):
            for name in _imported(node, module, is_package):
                if name in modules and name != module:
                    targets.add(name)
        # `from keras_adp import graph` names the module, not the package.
        if module != PACKAGE:
            targets.discard(PACKAGE)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan),
    each sorted; a module importing itself is not counted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_import_graph_sees_known_edges():
    graph = import_graph()
    assert "keras_adp.graph" in graph["keras_adp.rebuild"]
    assert "keras_adp.policy" in graph["keras_adp.pruning_steps"]


def test_keras_adp_has_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles among keras_adp modules: {found}"


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    result = cycles(import_graph())
    for component in result:
        print(" <-> ".join(component))
    print(f"{len(result)} cycle(s)")
