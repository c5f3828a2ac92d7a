"""Experiments bundled with larsbench (YAML files next to this module)."""
