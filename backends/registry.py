"""Backends by name: the ones shipped here plus any installed under the entry-point group.

A third party adds a backend by declaring, in its own package metadata::

    [project.entry-points."larsbench.backends"]
    mybackend = "mypkg.backend:MyBackend"

Names are listed without importing any backend, so validating a config stays cheap and does
not need DeepSpeed or Horovod installed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from larsbench.backends.base import Backend
from larsbench.core.errors import ConfigError

ENTRY_POINT_GROUP = "larsbench.backends"


def _targets() -> dict[str, str]:
    # larsbench's own three are declared the same way, in its pyproject.toml: one list.
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted(_targets())


def get_backend(name: str) -> type[Backend]:
    targets = _targets()
    if name not in targets:
        raise ConfigError("backend", f"unknown backend {name!r}; choose one of {', '.join(sorted(targets))}")
    module_name, _, attr = targets[name].partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{targets[name]} is not a larsbench Backend subclass")
    return cls
