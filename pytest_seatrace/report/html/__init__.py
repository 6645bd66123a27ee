"""The self-contained HTML report of ``--race-html``: one file, inline CSS, SVG and one small
script, no network.

It is rendered from the same document ``--race-json`` writes, so the two never disagree, and it
must open anywhere (a CI artifact, an air-gapped machine): no script, font, stylesheet or image
is fetched. The parts: :mod:`.page` (the page and each race's section, with ``page.css`` and
``page.js`` as package data), :mod:`.charts` and :mod:`.timeline` (SVG drawn over the
primitives of :mod:`.svg`), :mod:`.tables` and :mod:`.request_table`, :mod:`.markup` (escaping
and outcome colours every part shares).
"""

from __future__ import annotations

from pytest_seatrace.report.html.page import render_html

__all__ = ["render_html"]
