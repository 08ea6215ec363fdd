"""The HL7 layer's own structure: modules that import each other without cycles."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import mllp_trio._hl7 as hl7_layer

PACKAGE = Path(hl7_layer.__file__).parent
PREFIX = "mllp_trio._hl7."


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> set[str]:
    """The _hl7 modules imported at module level, outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and not _is_type_checking(node):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PREFIX):
                found.add(node.module.removeprefix(PREFIX))
            elif node.module == "mllp_trio._hl7":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix(PREFIX) for a in node.names if a.name.startswith(PREFIX)
            )
    return found


def test_hl7_modules_import_each_other_without_cycles() -> None:
    graph = {
        path.stem: _runtime_imports(ast.parse(path.read_text()))
        for path in PACKAGE.glob("_*.py")
        if path.stem != "__init__"
    }
    assert {"_msh", "_ack", "_reply", "_policy", "_pipeline", "_handler"} <= set(graph)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # pragma: no cover - the failure message
        raise AssertionError(f"import cycle in mllp_trio._hl7: {exc.args[1]}") from None
    # The order the package docstring gives is one valid order.
    documented = [line.split("``")[1] for line in hl7_layer.__doc__.splitlines() if "* ``" in line]
    assert set(documented) == set(order)
    for position, module in enumerate(documented):
        assert graph[module] <= set(documented[:position]), module


def test_package_re_exports_every_public_name_of_its_modules() -> None:
    for path in PACKAGE.glob("_*.py"):
        if path.stem == "__init__":
            continue
        module = __import__(f"{PREFIX}{path.stem}", fromlist=["__all__"])
        missing = set(module.__all__) - set(hl7_layer.__all__)
        assert not missing, (path.stem, missing)
    for name in hl7_layer.__all__:
        assert getattr(hl7_layer, name) is not None
