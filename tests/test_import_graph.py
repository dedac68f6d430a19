"""No import cycles among the modules of `keras_adp`, and private Keras and
TensorFlow internals reached from two modules only.

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



# ------------------------------------------ private Keras and TF internals
# The two modules allowed to reach Keras' and TensorFlow's internals.
INTERNALS_HOMES = ("keras_graph.py", "distribute.py")
PRIVATE_MODULES = ("keras.src", "tensorflow.python")
# Private access to libraries other than Keras and TensorFlow, each with its
# reason: (file, expression as `ast.unparse` writes it).
OTHER_LIBRARIES = {
    # ai_edge_litert's Interpreter (LiteRT, not TensorFlow) lists operators
    # only privately; litert_interpreter falls back when it is missing.
    ("litert_interpreter.py", "interpreter._get_ops_details"),
}


def _is_private(name: str) -> bool:
    """`_name` or `__name`, not a dunder such as `__name__`."""
    return name.startswith("_") and not (
        name.startswith("__") and name.endswith("__")
    )


def _own_module_aliases(
    tree: ast.Module, package_dir: pathlib.Path
) -> set[str]:
    """Names a module binds to keras_adp's own modules by import
    (`from keras_adp import graph as graph_lib` -> `graph_lib`;
    `import keras_adp.graph` -> `keras_adp.graph` and `keras_adp`)."""
    def is_own_module(dotted: str) -> bool:
        parts = dotted.split(".")
        if parts[0] != PACKAGE:
            return False
        path = package_dir.joinpath(*parts[1:])
        return (
            path.with_suffix(".py").is_file()
            or (path / "__init__.py").is_file()
        )

    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not is_own_module(alias.name):
                    continue
                if alias.asname:
                    aliases.add(alias.asname)
                else:
                    parts = alias.name.split(".")
                    aliases.update(
                        ".".join(parts[:end])
                        for end in range(1, len(parts) + 1)
                    )
        elif isinstance(node, ast.ImportFrom):
            base = PACKAGE if node.level else (node.module or "")
            if node.level and node.module:
                base = f"{PACKAGE}.{node.module}"
            for alias in node.names:
                if is_own_module(f"{base}.{alias.name}"):
                    aliases.add(alias.asname or alias.name)
    return aliases


def private_accesses(
    source: str, package_dir: pathlib.Path = ROOT
) -> list[tuple[int, str]]:
    """(line, what) for each reach into private Keras/TF internals.

    Reported:
    - an import of `keras.src...` or `tensorflow.python...` (`import` or
      `from ... import`, anywhere in the module);
    - a string constant that starts with `keras.src` or
      `tensorflow.python` (a module probed by name, e.g. with
      `importlib.import_module` or `importlib.util.find_spec`), except
      docstrings;
    - `obj._name` (read, written or deleted), and `getattr`, `setattr`,
      `hasattr` or `delattr` with a literal name `"_name"`, where `_name`
      starts with an underscore and is not a dunder (`__name__`), unless
      `obj` is `self`, `cls`, or a keras_adp module bound by an import
      of this module (`graph_lib._helper`, `keras_adp.graph._helper`).

    Any other object (a model, a tensor, a layer, a Keras module or an
    object of a third-party library) is taken to be someone else's: the
    source does not say whose class an object is, so the rule is
    conservative, and `OTHER_LIBRARIES` lists the exceptions. Not seen: a
    private Keras attribute read as `self._name` in a subclass of a Keras
    class, and names built at run time.
    """
    tree = ast.parse(source)
    own = {"self", "cls"} | _own_module_aliases(tree, package_dir)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(
            node,
            (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef),
        ) and node.body and isinstance(node.body[0], ast.Expr) and isinstance(
            node.body[0].value, ast.Constant
        ):
            docstrings.add(id(node.body[0].value))

    def others(target: ast.AST) -> bool:
        return ast.unparse(target) not in own

    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            what = next(
                (f"import {name}" for name in names
                 if name.startswith(PRIVATE_MODULES)),
                None,
            )
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith(
                PRIVATE_MODULES
            ):
                what = f"from {node.module} import ..."
        elif isinstance(node, ast.Constant):
            if (
                isinstance(node.value, str)
                and node.value.startswith(PRIVATE_MODULES)
                and id(node) not in docstrings
            ):
                what = f"{node.value!r}"
        elif isinstance(node, ast.Attribute):
            if _is_private(node.attr) and others(node.value):
                what = ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and others(node.args[0])
        ):
            what = ast.unparse(node)
        if what:
            found.append((node.lineno, what))
    return sorted(found)


def test_private_access_rule_flags_keras_and_tf_internals_only():
    source = """
\"\"\"Docstrings may name keras.src.ops.numpy.Add.\"\"\"
import importlib
import keras.src.ops
from keras.src.ops import nn
from tensorflow.python.eager import context
from keras_adp import graph as graph_lib
import keras_adp.keras_graph

importlib.util.find_spec("keras.src.export.litert")
tensor._keras_history
getattr(model, "_compile_config", None)
setattr(model, "_called", True)
model.__class__
self._cache
cls._registry
graph_lib._helper()
keras_adp.keras_graph._helper()
getattr(self, "_cache", None)
hasattr(layer, "__call__")
"""
    found = [what for _, what in private_accesses(source)]
    assert found == [
        "import keras.src.ops",
        "from keras.src.ops import ...",
        "from tensorflow.python.eager import ...",
        "'keras.src.export.litert'",
        "tensor._keras_history",
        "getattr(model, '_compile_config', None)",
        "setattr(model, '_called', True)",
    ]


def test_private_keras_access_only_in_keras_graph_and_distribute():
    """Private Keras/TensorFlow internals are reached only from
    `keras_adp/keras_graph.py` and `keras_adp/distribute.py`.

    Every other `keras_adp/*.py` is read with `ast`; see `private_accesses`
    for the rule (imports of `keras.src` / `tensorflow.python`, such module
    names as strings, and `obj._name` / `getattr(obj, "_name")` on objects
    other than `self`, `cls` and keras_adp's own modules) and
    `OTHER_LIBRARIES` for the reviewed exceptions on other libraries.
    """
    for home in INTERNALS_HOMES:
        assert (ROOT / home).is_file(), f"{home} no longer exists"
    found = []
    for path in sorted(ROOT.glob("*.py")):
        if path.name in INTERNALS_HOMES:
            continue
        for line, what in private_accesses(path.read_text()):
            if (path.name, what) not in OTHER_LIBRARIES:
                found.append(f"{path.name}:{line}: {what}")
    assert not found, (
        "private Keras/TensorFlow internals reached outside "
        f"{' and '.join(INTERNALS_HOMES)}; move each into a named function "
        "there:\n" + "\n".join(found)
    )


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    result = cycles(import_graph())
    for component in result:
        print(" <-> ".join(component))
    print(f"{len(result)} cycle(s)")
