"""docs/running.md's settings table is the one the code generates (every field, its role)."""

from __future__ import annotations

import os

from larsbench.suite.settings_doc import settings_table
from tests.conftest import REPO

DOC = REPO / "docs" / "running.md"
START, END = "<!-- settings:", "<!-- /settings -->"


def test_the_settings_table_is_current():
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    marker, body = rest.split("-->\n", 1)
    body, tail = body.split(END, 1)
    if os.environ.get("LARSBENCH_REGEN_DOCS"):
        DOC.write_text(f"{head}{START}{marker}-->\n{settings_table()}{END}{tail}")
        return
    assert body == settings_table(), (
        "docs/running.md's settings table is out of date; regenerate it with: "
        "LARSBENCH_REGEN_DOCS=1 .venv/bin/python -m pytest tests/suite/test_settings_doc.py"
    )
