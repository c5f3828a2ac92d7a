"""Backend adapters: how a distributed library starts, wraps, reduces and stops.

Import from the modules (``larsbench.backends.registry``, ``.base``): the package itself imports
nothing.
"""
