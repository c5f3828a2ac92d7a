"""Backend adapters: how a distributed library starts, wraps, reduces and stops."""

from larsbench.backends.base import Backend
from larsbench.backends.registry import backend_names, get_backend

__all__ = ["Backend", "backend_names", "get_backend"]
