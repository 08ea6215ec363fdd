"""Import contracts: every import points down the layers, and the sans-IO layers never load Trio.

The layers are listed in ``LAYERS`` (and in docs/architecture.md): a module
may import modules of its own layer or of a lower one. Two kinds of check:

* an ``ast`` scan of every module under ``mllp_trio/`` (every import
  statement, wherever it stands, and ``importlib.import_module("...")`` with
  a literal name), which names the offending file, line and import;
* for ``proto`` and ``_hl7``, a fresh interpreter that imports each of their
  modules with the facade ``mllp_trio/__init__.py`` bypassed (it imports
  everything), then checks that neither Trio nor any other I/O module nor a
  higher layer got loaded, whoever pulled it in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import attrs
import pytest

import mllp_trio

PACKAGE = "mllp_trio"
PACKAGE_DIR = Path(mllp_trio.__file__).resolve().parent

#: Layer of each package or module, by name prefix. Lowest first.
LAYERS: dict[str, int] = {
    # 0: shared exceptions, the version, the helper of the public namespaces
    "mllp_trio._errors": 0,
    "mllp_trio._version": 0,
    "mllp_trio._public": 0,
    # 1: sans-IO framing and exchange (public namespace)
    "mllp_trio.proto": 1,
    # 2: sans-IO HL7
    "mllp_trio._hl7": 2,
    # 2, above _hl7 (which never imports it): sans-IO batch files
    "mllp_trio._batch": 2,
    # 3: I/O on Trio
    "mllp_trio._io": 3,
    "mllp_trio._tls": 3,
    "mllp_trio._config": 3,
    "mllp_trio._server": 3,
    "mllp_trio._client": 3,
    "mllp_trio._load": 3,
    # 4: storage (public namespace)
    "mllp_trio.store": 4,
    # 4: batch files over SFTP and FTPS (blocking backends in worker threads)
    "mllp_trio.store._remote": 4,
    "mllp_trio._service": 4,
    # 5: the command line
    "mllp_trio._cli": 5,
    "mllp_trio._devcerts": 5,
    "mllp_trio.__main__": 5,
}
#: The package ``__init__`` is the facade: it may import anything, and as a
#: target it counts as the top layer, so only the command line may import it.
FACADE_LAYER = 5

#: Within layer 3, the I/O building blocks stay below the listener and client.
FORBIDDEN_WITHIN_LAYER: dict[str, tuple[str, ...]] = {
    "mllp_trio._hl7": ("mllp_trio._batch",),
    "mllp_trio._io": ("mllp_trio._server", "mllp_trio._client"),
    "mllp_trio._tls": ("mllp_trio._server", "mllp_trio._client"),
    # The load generator drives any peer from the sans-IO core, not through our client.
    "mllp_trio._load": ("mllp_trio._server", "mllp_trio._client"),
}

#: The sans-IO layers and the modules they must never load: Trio and its
#: own dependencies, other event loops, sockets and TLS, storage.
SANS_IO = ("mllp_trio.proto", "mllp_trio._hl7", "mllp_trio._batch")
IO_MODULES = (
    "trio",
    "sniffio",
    "outcome",
    "anyio",
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "sqlite3",
)


# ---------------------------------------------------------------- the scanner


@attrs.frozen
class Import:
    """One import found in a module: who, where, and which module it loads."""

    module: str
    where: str  # "mllp_trio/_server.py:33"
    target: str

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    return sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)


def _is_submodule(name: str, package_dir: Path) -> bool:
    """Tell whether ``name`` (a dotted name in the package) is a module or package file."""
    base = package_dir.joinpath(*name.split(".")[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve_from(
    node: ast.ImportFrom, module: str, is_package: bool, package_dir: Path
) -> Iterator[str]:
    if node.level:
        # Relative: the current package, then one level up per extra dot.
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, node.module] if node.module else anchor)
    else:
        base = node.module or ""
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        if candidate.startswith(PACKAGE + ".") and _is_submodule(candidate, package_dir):
            yield candidate  # `from mllp_trio import store` loads the subpackage
        else:
            yield base


def imports_of(path: Path, package_dir: Path = PACKAGE_DIR) -> list[Import]:
    """Every import in a module: statements anywhere in it, and literal import_module calls."""
    module = module_name(path, package_dir)
    is_package = path.name == "__init__.py"
    shown = path.relative_to(package_dir.parent).as_posix()
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # One entry per module: `from m import a, b` is one import of m.
            targets = list(dict.fromkeys(_resolve_from(node, module, is_package, package_dir)))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        position = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        found.extend((*position, target) for target in targets)
    # ast.walk goes breadth first: put the imports back in source order.
    found.sort(key=lambda item: item[:2])
    return [Import(module, f"{shown}:{line}", target) for line, _, target in found]


def _group(name: str) -> str:
    """The LAYERS entry a module belongs to (the name itself if none)."""
    for prefix in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return name


def layer_of(name: str) -> int | None:
    if name == PACKAGE:
        return FACADE_LAYER
    return LAYERS.get(_group(name))


def upward_imports(found: list[Import]) -> list[str]:
    """The imports of mllp_trio modules that break the layer rules, as messages."""
    problems: list[str] = []
    for imp in found:
        if imp.module == PACKAGE:
            continue  # the facade may import anything
        if imp.target != PACKAGE and not imp.target.startswith(PACKAGE + "."):
            continue  # third-party and standard library imports are not layered
        source, target = layer_of(imp.module), layer_of(imp.target)
        if source is None or target is None:
            continue  # reported by test_every_module_has_a_layer
        if target > source:
            problems.append(
                f"{imp}: layer {source} ({_group(imp.module)}) may not import "
                f"layer {target} ({_group(imp.target)})"
            )
        for prefix, forbidden in FORBIDDEN_WITHIN_LAYER.items():
            if _group(imp.module) == prefix and _group(imp.target) in forbidden:
                problems.append(f"{imp}: {prefix} may not import {_group(imp.target)}")
    return problems


# ---------------------------------------------------------------- the contracts


def all_imports() -> list[Import]:
    return [imp for path in package_modules() for imp in imports_of(path)]


def test_every_module_has_a_layer() -> None:
    modules = [module_name(path) for path in package_modules()]
    assert "mllp_trio.proto._mllp" in modules  # the walk found the tree
    missing = [name for name in modules if layer_of(name) is None]
    assert not missing, (
        f"modules without a layer: {missing}; add them to LAYERS in "
        "tests/test_architecture.py and to docs/architecture.md"
    )


def test_imports_point_down_the_layers() -> None:
    found = all_imports()
    # The scan sees the package's own imports (a broken scanner would pass vacuously).
    assert any(imp.target.startswith("mllp_trio.proto") for imp in found)
    problems = upward_imports(found)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


@pytest.mark.parametrize("layer", SANS_IO)
def test_sans_io_layer_imports_no_io_module(layer: str) -> None:
    found = [
        imp
        for imp in all_imports()
        if _group(imp.module) == layer and imp.target.split(".")[0] in IO_MODULES
    ]
    assert not found, f"{layer} is sans-IO, but:\n" + "\n".join(map(str, found))


# ---------------------------------------------------------------- the scanner's own checks


def write_tree(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / PACKAGE
    for name, text in files.items():
        path = package_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package_dir


def test_scanner_resolves_every_import_form(tmp_path: Path) -> None:
    package_dir = write_tree(
        tmp_path,
        {
            "__init__.py": "",
            "_errors.py": "",
            "_cli.py": "",
            "_server.py": "",
            "store/__init__.py": "",
            "store/_journal.py": "",
            "_io/__init__.py": "",
            "_io/_stream.py": """
                from __future__ import annotations
                import typing
                import mllp_trio.store._journal
                from mllp_trio import _server, _errors
                from mllp_trio.store import Delivery
                from .. import _cli
                from . import _sibling
                from ..store._journal import x
                import importlib

                if typing.TYPE_CHECKING:
                    from mllp_trio._client import MLLPClient

                def later():
                    import trio
                    return importlib.import_module("mllp_trio._cli")
            """,
        },
    )
    found = imports_of(package_dir / "_io" / "_stream.py", package_dir)
    assert [(imp.where, imp.target) for imp in found if imp.target != "__future__"] == [
        ("mllp_trio/_io/_stream.py:3", "typing"),
        ("mllp_trio/_io/_stream.py:4", "mllp_trio.store._journal"),
        ("mllp_trio/_io/_stream.py:5", "mllp_trio._server"),
        ("mllp_trio/_io/_stream.py:5", "mllp_trio._errors"),
        ("mllp_trio/_io/_stream.py:6", "mllp_trio.store"),
        ("mllp_trio/_io/_stream.py:7", "mllp_trio._cli"),
        ("mllp_trio/_io/_stream.py:8", "mllp_trio._io"),  # no such file: a name in the package
        ("mllp_trio/_io/_stream.py:9", "mllp_trio.store._journal"),
        ("mllp_trio/_io/_stream.py:10", "importlib"),
        ("mllp_trio/_io/_stream.py:13", "mllp_trio._client"),
        ("mllp_trio/_io/_stream.py:16", "trio"),
        ("mllp_trio/_io/_stream.py:17", "mllp_trio._cli"),
    ]
    problems = upward_imports(found)
    assert [p.split(":")[1] for p in problems] == ["4", "5", "6", "7", "9", "13", "17"]
    assert "layer 3 (mllp_trio._io) may not import layer 4 (mllp_trio.store)" in problems[0]
    assert problems[1].endswith("mllp_trio._io may not import mllp_trio._server")
    assert problems[5].endswith("mllp_trio._io may not import mllp_trio._client")


def test_scanner_lets_the_facade_and_the_cli_import_anything_below(tmp_path: Path) -> None:
    package_dir = write_tree(
        tmp_path,
        {
            "__init__.py": "from mllp_trio._cli import main\nfrom mllp_trio.store import S\n",
            "_cli.py": "import mllp_trio\nfrom mllp_trio.store import S\n",
            "_server.py": "import mllp_trio\n",
        },
    )
    found = [imp for path in package_modules(package_dir) for imp in imports_of(path, package_dir)]
    problems = upward_imports(found)
    assert len(problems) == 1
    assert "mllp_trio._server imports mllp_trio: layer 3" in problems[0]


# ---------------------------------------------------------------- the sans-IO layers, loaded

# Runs in a fresh interpreter: argv[1] is the package directory, argv[2] a JSON
# object with the packages to import, the mllp_trio prefixes they may load,
# and the I/O module names they must not load. Prints a JSON report.
PROBE = r"""
import importlib
import importlib.abc
import json
import sys
import traceback
import types
from pathlib import Path
from typing import TypedDict

package_dir = Path(sys.argv[1])
spec = json.loads(sys.argv[2])
preloaded = sorted(m for m in sys.modules if m.partition(".")[0] in spec["io"])

def unwanted(name):
    if name.partition(".")[0] in spec["io"]:
        return True
    if name == "mllp_trio" or not name.startswith("mllp_trio."):
        return False
    return not any(name == p or name.startswith(p + ".") for p in spec["allowed"])

culprits = {}

class Spy(importlib.abc.MetaPathFinder):
    # Notes who asked for an unwanted module, then lets the import go on.
    def find_spec(self, name, path=None, target=None):
        if unwanted(name) and name not in culprits:
            where = "?"
            for frame in reversed(traceback.extract_stack()):
                if frame.filename.startswith(str(package_dir)):
                    where = f"{frame.filename}:{frame.lineno}"
                    break
            culprits[name] = where
        return None

sys.meta_path.insert(0, Spy())

# A stand-in for the package: its __init__ (the facade) would import every layer.
stub = types.ModuleType("mllp_trio")
stub.__path__ = [str(package_dir)]
sys.modules["mllp_trio"] = stub

imported = []
for package in spec["packages"]:
    directory = package_dir.joinpath(*package.split(".")[1:])
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
        imported.append(name)

print(json.dumps({
    "preloaded": preloaded,
    "imported": imported,
    "loaded": sorted(m for m in sys.modules if unwanted(m)),
    "culprits": culprits,
}))
"""


class ProbeReport(TypedDict):
    preloaded: list[str]
    imported: list[str]
    loaded: list[str]
    culprits: dict[str, str]


def probe(package_dir: Path, packages: list[str], allowed: list[str]) -> ProbeReport:
    spec = {"packages": packages, "allowed": allowed, "io": list(IO_MODULES)}
    result = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(package_dir), json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,  # a guard against a hang, not a measurement
    )
    assert result.returncode == 0, result.stderr
    report: ProbeReport = json.loads(result.stdout)
    assert not report["preloaded"], (
        f"the fresh interpreter had already loaded {report['preloaded']} (from a .pth "
        "file?), so this check cannot tell who imports them"
    )
    return report


@pytest.mark.parametrize("layer", SANS_IO)
def test_sans_io_layer_loads_without_trio(layer: str) -> None:
    allowed = [prefix for prefix, level in LAYERS.items() if level <= LAYERS[layer]]
    report = probe(PACKAGE_DIR, [layer], allowed)
    assert layer in report["imported"]
    assert len(report["imported"]) > 1  # the package and its modules
    assert not report["loaded"], (
        f"importing {layer} loaded {report['loaded']}; first asked for by "
        f"{json.dumps(report['culprits'], indent=1)}"
    )


def test_probe_names_the_module_that_pulls_trio_in(tmp_path: Path) -> None:
    # The harness itself: a sans-IO module that imports Trio through a helper
    # and one that imports a higher layer are both caught and located.
    package_dir = write_tree(
        tmp_path,
        {
            "__init__.py": "raise AssertionError('the facade must be bypassed')\n",
            "_errors.py": "",
            "_server.py": "",
            "proto/__init__.py": "from mllp_trio.proto import _mllp\n",
            "proto/_mllp.py": "from mllp_trio import _errors\nfrom . import _helper\n",
            "proto/_helper.py": "import mllp_trio._server\nimport trio\n",
        },
    )
    report = probe(package_dir, ["mllp_trio.proto"], ["mllp_trio._errors", "mllp_trio.proto"])
    assert "trio" in report["loaded"]
    assert "mllp_trio._server" in report["loaded"]
    assert "mllp_trio._errors" not in report["loaded"]
    culprits = report["culprits"]
    assert culprits["trio"] == f"{package_dir / 'proto' / '_helper.py'}:2"
    assert culprits["mllp_trio._server"] == f"{package_dir / 'proto' / '_helper.py'}:1"
