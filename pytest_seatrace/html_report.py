"""The self-contained HTML report (placeholder until the HTML report lands)."""

from __future__ import annotations

import html
import json
from typing import Any


def render_html(document: dict[str, Any]) -> str:
    return "<!doctype html><pre>" + html.escape(json.dumps(document, indent=1)) + "</pre>"
