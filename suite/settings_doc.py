"""The run settings as a Markdown table (docs/running.md holds it; a test keeps it current)."""

from __future__ import annotations

import json
from typing import Any

from larsbench.core.spec import DEFAULTS, RUN_FIELDS, field_help, flag_for


def _choices(schema: dict[str, Any]) -> str:
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    kind = options[0]
    if "enum" in kind:
        return " \\| ".join(f"`{v}`" for v in kind["enum"])
    return {"integer": "integer", "number": "number", "boolean": "true/false", "string": "text", "object": "mapping (JSON)"}.get(
        kind.get("type", ""), "value"
    )


def settings_table() -> str:
    schemas = field_help()
    lines = ["| setting (flag) | role | values | default | meaning |", "|---|---|---|---|---|"]
    for name in RUN_FIELDS:
        schema = schemas[name]
        default = DEFAULTS[name]
        shown = "—" if default is None else f"`{json.dumps(default)}`"
        description = schema.get("description", "").replace("|", "\\|")
        lines.append(f"| `{name}` (`{flag_for(name)}`) | {schema['role']} | {_choices(schema)} | {shown} | {description} |")
    return "\n".join(lines) + "\n"
