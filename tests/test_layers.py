"""The house as DESIGN.md draws it: imports point down the layers, and no module imports
itself back through others (function-level imports included; imports kept for type checkers
only, under ``if TYPE_CHECKING:``, are not imports at run time and are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

import wgtlab

PACKAGE = Path(wgtlab.__file__).parent

# DESIGN.md, "Layers and where code lives": a module may import its own layer's package, any
# lower layer, and the foundation.
LAYERS = {
    "wgtlab.errors": 0,
    "wgtlab.defaults": 0,
    "wgtlab.views": 0,
    "wgtlab.samples": 0,
    "wgtlab.keyfiles": 0,
    "wgtlab.ces": 1,
    "wgtlab.sandbox": 1,
    "wgtlab.verify": 1,
    "wgtlab.trust": 2,
    "wgtlab.jobs": 3,
    "wgtlab.cluster": 4,
    "wgtlab.frame": 4,
    "wgtlab.receipts": 5,
    "wgtlab.notebook": 5,
    "wgtlab.commands": 5,
    "wgtlab.cli": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """What ``module`` imports: ``from package import submodule`` is the submodule (its
    package runs first whatever a module imports, so parent packages are not edges)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(n for n in names if n in modules)
            if not all(n in modules for n in names):
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {
        _module_name(p): p
        for p in PACKAGE.rglob("*.py")
        if "guest" not in p.parts  # the UDF guest runs inside the sandbox, not in wgtlab
    }
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = _imports(tree, name, path.name == "__init__.py", set(modules))
        # A module's parent packages run before it whatever it imports: no edges. ``wgtlab``
        # itself is the public face (it re-exports everything, lazily): no node.
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = {t for t in targets if t in modules and t not in parents | {name, "wgtlab"}}
    graph.pop("wgtlab", None)
    return graph


def _layer(module: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def test_every_module_has_a_layer():
    assert [m for m in _graph() if _layer(m) is None] == []


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if (_layer(target) or 0) > (_layer(module) or 0)
    )
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_notebook_and_the_cli_do_not_import_each_other():
    # Both are front ends on layer 5: what both show lives below them (views.plots, the
    # TextProgress subscriber in jobs.events), so either can change without the other.
    fronts = ("wgtlab.notebook", "wgtlab.commands")

    def front(module: str) -> str | None:
        return next((f for f in fronts if module == f or module.startswith(f + ".")), None)

    crossing = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if front(module) and front(target) and front(module) != front(target)
    )
    assert crossing == []
