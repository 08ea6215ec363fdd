"""Helper of the public namespaces: show public names under the namespace users import."""

from __future__ import annotations

import contextlib
from typing import Any


def expose(namespace: str, names: dict[str, Any], public: list[str]) -> None:
    """Set ``__module__`` of each public class and function to ``namespace``.

    Tracebacks, reprs and documentation then show ``mllp_trio.MLLPServer``
    rather than the private module that defines it.
    """
    for name in public:
        obj = names[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith("mllp_trio."):
            with contextlib.suppress(AttributeError, TypeError):  # aliases, constants
                obj.__module__ = namespace
