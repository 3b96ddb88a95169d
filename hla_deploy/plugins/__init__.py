"""Deprecated alias of hla_deploy.native (the Python side of the native libraries), kept for one release.

``from hla_deploy.plugins import ort_library_path``, ``import hla_deploy.plugins.<module>`` and
``python -m hla_deploy.plugins.<module>`` keep working and give the very objects of hla_deploy.native
(the same module, not a copy: monkeypatching either name patches both), with one DeprecationWarning
when this package is first imported.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

import hla_deploy.native as _native
from hla_deploy.native import *  # noqa: F401,F403  (the public names, as before)
from hla_deploy.native import __all__  # noqa: F401

_OLD, _NEW = __name__, _native.__name__

warnings.warn(f"{_OLD} is deprecated and will be removed in the next release: use {_NEW} "
              f"(the same functions; e.g. `from {_NEW} import ort_library_path`)", DeprecationWarning, stacklevel=2)


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return importlib.import_module(_NEW + spec.name[len(_OLD):])   # the module itself, not a copy

    def exec_module(self, module):
        pass   # already executed under its own name

    def get_code(self, fullname):
        """For ``python -m hla_deploy.plugins.X``: runs hla_deploy.native.X's code as __main__."""
        new = _NEW + fullname[len(_OLD):]
        return importlib.util.find_spec(new).loader.get_code(new)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """hla_deploy.plugins.X -> hla_deploy.native.X (whatever X: every submodule, now and later)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_OLD + "."):
            return None
        spec = importlib.util.find_spec(_NEW + fullname[len(_OLD):])
        if spec is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(), origin=spec.origin)


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())


def __getattr__(name):
    """hla_deploy.native's names and submodules as attributes (``hla_deploy.plugins.locations``)."""
    if hasattr(_native, name):
        return getattr(_native, name)
    try:
        return importlib.import_module(f"{_OLD}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {_OLD!r} has no attribute {name!r}") from None
