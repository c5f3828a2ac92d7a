"""Backend adapters: how a distributed library starts, wraps, reduces and stops."""

from backends.base import Backend
from backends.registry import backend_names, get_backend

__all__ = ["Backend", "backend_names", "get_backend"]
