"""The HTML report's history timeline: drawn from the document's ``histories`` for each partition
the model did not accept, one row per client, the prefix numbered, the stuck operations marked."""

from __future__ import annotations

import random
import re
from typing import Any, cast

from pytest_seatrace.core.document import CheckedHistoryDoc, RaceDoc
from pytest_seatrace.report.files import json_document
from pytest_seatrace.report.html import render_html
from pytest_seatrace.report.html.history_timeline import MAX_ROWS
from tests.test_reports import synthetic_race


def double_booking(clients: int, *, seed: int = 7, resource: str = "A1") -> dict[str, Any]:
    """A one-wave race on one seat judged by ``Seats()``: two clients won it. The first winner and
    every rejection make the longest linearizable prefix; the second winner cannot follow it; two
    requests ended ``info`` (a 503, a timeout)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    first, second = rng.sample(range(1, clients + 1), 2)
    unknown = {c for c in rng.sample(range(1, clients + 1), 4) if c not in (first, second)}
    operations: list[dict[str, Any]] = []
    order = 1
    for client in range(1, clients + 1):
        call = round(rng.uniform(0.0, 0.4), 3)
        ret: float | None = round(call + rng.uniform(2.0, 40.0), 3)
        op: dict[str, Any] = {
            "process": client - 1,
            "client": client,
            "op": "POST /seats/{resource}/book",
            "f": "book",
            "input": resource,
            "call_ms": call,
            "order": None,
            "stuck": False,
        }
        if client in (first, second):
            op.update(type="ok", response="201 booked", return_ms=ret)
        elif client in unknown:
            op.update(type="info", response="503 Service Unavailable", return_ms=None)
        else:
            op.update(type="fail", response="409 taken", return_ms=ret)
        operations.append(op)
    operations[first - 1]["order"] = order
    for op in operations:
        if op["type"] == "fail":
            order += 1
            op["order"] = order
    operations[second - 1]["stuck"] = True
    return {
        "round": 1,
        "resource": resource,
        "model": "Seats(capacity=1)",
        "valid": False,
        "elapsed_s": 0.0042,
        "explanation": f"the longest linearizable prefix has {order} operations; client {second}'s "
        "book → 201 cannot follow it (the seat is taken)",
        "operations": operations,
    }


def page_with(*histories: dict[str, Any]) -> str:
    race = synthetic_race("t.py::test_book", 1, 20, unsafe=True)
    race["histories"] = cast("list[CheckedHistoryDoc]", list(histories))
    return render_html(json_document([race], seed=1))


def history_svgs(page: str) -> list[str]:
    return re.findall(r'<svg class="history".*?</svg>', page, re.S)


def test_a_failing_partition_is_drawn_with_one_row_per_client() -> None:
    (svg,) = history_svgs(page_with(double_booking(100)))
    clients = re.findall(r'<g class="row" data-client="(\d+)"', svg)
    assert sorted(map(int, clients)) == list(range(1, 101))
    assert len(re.findall(r'<g class="op ', svg)) == 100


def test_the_stuck_operation_is_marked_and_the_prefix_numbered() -> None:
    history = double_booking(30)
    page = page_with(history)
    (svg,) = history_svgs(page)
    (stuck,) = [op for op in history["operations"] if op["stuck"]]
    row = re.search(rf'<g class="row" data-client="{stuck["client"]}">.*?</g></g>', svg, re.S)
    assert row is not None
    assert 'class="op win stuck"' in row.group(0)
    assert svg.count("op win stuck") == 1
    assert f"cannot follow the prefix: client {stuck['client']}" in page
    numbers = sorted(int(n) for n in re.findall(r'<text class="order"[^>]*>(\d+)</text>', svg))
    placed = sum(1 for op in history["operations"] if op["order"])
    assert numbers == list(range(1, placed + 1))
    assert "cannot follow the longest linearizable prefix" in svg


def test_an_info_operation_runs_open_ended_to_the_right_edge() -> None:
    history = double_booking(30)
    (svg,) = history_svgs(page_with(history))
    infos = [op for op in history["operations"] if op["type"] == "info"]
    assert infos
    assert len(re.findall(r'class="op unknown open"', svg)) == len(infos)
    assert "never (+∞" in svg


def test_a_valid_partition_or_an_absent_key_draws_no_timeline() -> None:
    valid = {**double_booking(10), "valid": True, "operations": []}
    assert history_svgs(page_with(valid)) == []
    race: RaceDoc = synthetic_race("t.py::test_book", 1, 20, unsafe=True)
    assert "histories" not in race
    page = render_html(json_document([race], seed=1))
    assert history_svgs(page) == []
    assert "History</h3>" not in page


def test_op_names_and_responses_are_escaped() -> None:
    history = double_booking(5)
    for op in history["operations"]:
        op["op"] = "POST /<script>alert(1)</script>"
        op["response"] = '409 <b>"taken"</b> & gone'
        op["input"] = "<i>A1</i>"
    history["resource"] = "<seat>"
    history["model"] = "Seats<x>"
    page = page_with(history)
    (svg,) = history_svgs(page)
    assert "<script>alert" not in page
    assert "<b>" not in svg
    assert "<i>A1" not in svg
    assert "<seat>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "409 &lt;b&gt;&quot;taken&quot;&lt;/b&gt; &amp; gone" in svg
    assert "Seats&lt;x&gt;" in page


def test_a_thousand_clients_draw_a_bounded_number_of_rows_telling_ones_first() -> None:
    history = double_booking(1000)
    page = page_with(history)
    (svg,) = history_svgs(page)
    drawn = {int(c) for c in re.findall(r'<g class="row" data-client="(\d+)"', svg)}
    assert len(drawn) == MAX_ROWS
    telling = {op["client"] for op in history["operations"] if op["type"] != "fail" or op["stuck"]}
    assert telling <= drawn
    assert f"{MAX_ROWS} clients drawn" in page
    assert len(svg) < 200_000


def test_an_undecided_partition_is_drawn_and_said_to_be_unknown() -> None:
    history = {**double_booking(12), "valid": None, "explanation": ""}
    page = page_with(history)
    assert len(history_svgs(page)) == 1
    assert "<b>unknown (time budget spent)</b>" in page


def test_hover_text_gives_the_call_and_return_instants() -> None:
    history = double_booking(12)
    (svg,) = history_svgs(page_with(history))
    op = next(op for op in history["operations"] if op["type"] == "fail")
    assert f"call {op['call_ms']:.3f} ms · return {op['return_ms']:.3f} ms" in svg
    assert f"client {op['client']} · process {op['process']} · POST /seats/{{resource}}/book" in svg
