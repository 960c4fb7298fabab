"""The package's import graph, read from the source with `ast`: the commands (c3exp/cli/) are its only entry, no core
module imports one, and no import cycle among c3exp's modules."""
from __future__ import annotations

import ast
from pathlib import Path

import c3exp

PACKAGE = Path(c3exp.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def is_shim(tree: ast.Module) -> bool:
    """A `python -m c3exp.<command>` shim: the command's import and `main()` under `if __name__ == "__main__"`."""
    match tree.body:
        case [ast.ImportFrom(module=str(source), names=[ast.alias(name="main")]),
              ast.If(test=ast.Compare(left=ast.Name("__name__")), body=[ast.Expr(ast.Call(ast.Name("main")))])]:
            return source.startswith("c3exp.cli")
    return False


def imported(module: str, nodes: list[ast.stmt] | ast.AST) -> set[str]:
    """The c3exp modules that `nodes` import (`from c3exp.x import y`: c3exp.x.y where y is a module, else c3exp.x)."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module if not node.level else ".".join([*module.split(".")[:-node.level], *filter(None, [node.module])])
            names |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {name for name in names if name.split(".")[0] == "c3exp"}


def top_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements run at import: the module body, into if/try blocks, but not `if TYPE_CHECKING:`."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [stmt for handler in node.handlers for stmt in handler.body]
    return found


def test_the_shims_are_the_only_modules_outside_cli_that_name_a_command():
    core = {name: tree for name, tree in MODULES.items() if not name.startswith("c3exp.cli") and not is_shim(tree)}
    assert {"c3exp.errors", "c3exp.training.train", "c3exp.report.markdown"} <= set(core)
    assert {"c3exp.__main__", "c3exp.eval", "c3exp.report.__main__", "c3exp.bench.__main__"} <= set(MODULES) - set(core)
    offenders = {name: sorted(found) for name, tree in core.items()
                 if (found := {n for n in imported(name, list(ast.walk(tree))) if n.startswith("c3exp.cli")})}
    assert offenders == {}


def test_no_import_cycle_among_c3exps_modules():
    graph = {name: imported(name, top_level(tree)) & set(MODULES) for name, tree in MODULES.items()}
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        """Depth first: the first cycle reachable from `module`, as the modules along it."""
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for child in sorted(graph[module]):
            if (found := cycle_from(child, [*path, module])) is not None:
                return found
        done.add(module)
        return None

    assert [cycle for module in sorted(graph) if (cycle := cycle_from(module, []))] == []
