"""Lazy package faces (PEP 562): a package's public names, each imported from its module on first use.

A package's `__init__.py` lists its public names and the module each lives in; importing the package
imports none of them, so that `textvae --help` and argument errors answer before torch is imported.
"""

from __future__ import annotations

import importlib


def lazy_face(package_globals: dict, names: dict[str, str]):
    """The `__getattr__` and `__dir__` of a package whose public `names` (name -> module, relative to the
    package: ".modeling") are imported when first read, then kept in the package's namespace."""
    package = package_globals["__name__"]

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        package_globals[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package_globals) | set(names))

    return __getattr__, __dir__
