"""The reports a session leaves behind: ``--race-json``, ``--race-html`` and JUnit XML properties.

Real races against the bundled service run in inner pytest sessions, so the files are the ones
users get, under plain runs and pytest-xdist. The HTML report is also opened in a real headless
Chromium: the point of the report is that a browser shows its charts with no network at all.
"""

from __future__ import annotations

import copy
import html.parser
import json
import random
import re
import shutil
import struct
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_seatrace import Outcome, Record
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.core.records import RaceRun
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.report.files import json_document
from pytest_seatrace.report.html import render_html
from pytest_seatrace.report.html.charts import place_labels
from pytest_seatrace.report.html.page import SCRIPT
from pytest_seatrace.report.html.request_table import MAX_TABLE_ROWS, MAX_TABLE_ROWS_TOTAL, MIN_TABLE_ROWS
from pytest_seatrace.report.html.timeline import MAX_DRAWN_PER_RESOURCE

INNER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
RUN_TIMEOUT = 180
BROWSER_TIMEOUT = 90

RACES = """
from __future__ import annotations

import pytest


def seat(a):
    return {"seats": [a.resource], "user": f"u{a.client}"}


@pytest.mark.race(resources=4, concurrency=20)
def test_safe(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=seat)
    assert result.requests == 80


@pytest.mark.race(resources=4, concurrency=20)
def test_unsafe(race, sample_service_factory):
    service = sample_service_factory(strategy="unsafe", window_ms=50)
    result = race.post(service.url + "/orders", json=seat, check=False)
    assert result.violations
"""
SAFE = "test_races.py::test_safe"
UNSAFE = "test_races.py::test_unsafe"


def schema() -> dict[str, Any]:
    """The schema as installed: package data, not a path into the source tree."""
    schema_file = resources.files("pytest_seatrace.report").joinpath("report.schema.json")
    text = schema_file.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object it describes.

    The shipped schema lets schema 1 grow new keys; the tests do not, so a key added to the
    JSON without being documented in the schema fails here.
    """
    node = copy.deepcopy(node)
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "properties" in item and "additionalProperties" not in item:
                item["additionalProperties"] = False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return node


def validate(document: dict[str, Any]) -> None:
    for candidate in (schema(), strict(schema())):
        validator = jsonschema.Draft202012Validator(
            candidate, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def run_races(pytester: pytest.Pytester, *args: str, extra: str = "", tests: int = 2) -> pytest.RunResult:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_races=RACES + extra)
    result = pytester.runpytest_subprocess(*args, timeout=RUN_TIMEOUT)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=tests)
    return result


# -- JSON ------------------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema"] == {
        "const": 1,
        "description": schema()["properties"]["schema"]["description"],
    }


@pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["plain", "xdist"])
def test_race_json_validates_and_counts(pytester: pytest.Pytester, xdist: str) -> None:
    run_races(pytester, "--race-json", "r.json", *xdist.split())
    document = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    validate(document)
    assert document["schema"] == 1
    races = {race["name"]: race for race in document["races"]}
    assert set(races) == {SAFE, UNSAFE}

    safe, unsafe = races[SAFE], races[UNSAFE]
    assert safe["passed"] is True
    counts = ("requests", "wins", "rejections", "errors", "unknown")
    assert [safe[key] for key in counts] == [80, 4, 76, 0, 0]
    assert safe["status_counts"] == {"201": 4, "409": 76}
    assert [row["wins"] for row in safe["by_resource"]] == [1, 1, 1, 1]
    assert sorted(safe["winners"]) == ["1", "2", "3", "4"]
    assert unsafe["passed"] is False
    assert unsafe["requests"] == 80
    assert unsafe["wins"] > 4
    assert unsafe["wins"] + unsafe["rejections"] + unsafe["errors"] + unsafe["unknown"] == 80
    assert unsafe["double_bookings"] > 0
    assert {v["kind"] for v in unsafe["violations"]} == {"too-many"}

    for race in (safe, unsafe):
        history = race["history"]
        assert history is not None, race["name"]
        assert {len(column) for column in history.values()} == {race["requests"]}
        outcomes = Counter(history["outcome"])
        assert outcomes["win"] == race["wins"]
        assert outcomes["rejection"] == race["rejections"]
        stamps = zip(history["call_ns"], history["start_ns"], history["end_ns"], strict=True)
        assert all(0 < call <= sent <= end for call, sent, end in stamps)  # the call began before it was sent
        assert race["clock"]["perf_counter_ns"] <= min(history["start_ns"])
        if xdist:
            assert race["worker"].startswith("gw")
        else:
            assert "worker" not in race


def test_unwritable_report_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--race-json", "/nonexistent-dir/r.json", timeout=RUN_TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--race-json*/nonexistent-dir/r.json*"])
    result.stdout.no_fnmatch_line("*passed*")


# -- JUnit XML -------------------------------------------------------------------------------------


TWO_CALLS = """

@pytest.mark.race(resources=2, concurrency=5)
def test_two_calls(race, sample_service):
    race.post(sample_service.url + "/orders", json=seat)
    race.post(sample_service.url + "/orders", json=seat, expect=0, reject=409, resources=[1])
"""


@pytest.mark.parametrize("xdist", ["", "-n 2"], ids=["plain", "xdist"])
def test_junit_xml_has_race_properties(pytester: pytest.Pytester, xdist: str) -> None:
    run_races(
        pytester, "--junitxml", "j.xml", "--race-json", "r.json", *xdist.split(), extra=TWO_CALLS, tests=3
    )
    root = ET.parse(pytester.path / "j.xml").getroot()  # noqa: S314 - our own file
    cases = {case.get("name"): case for case in root.iter("testcase")}
    props = {
        name: {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        for name, case in cases.items()
    }
    safe, unsafe = props["test_safe"], props["test_unsafe"]
    for key in ("requests", "wins", "rejections", "errors", "unknown", "double_bookings", "rps", "mode"):
        assert f"race_{key}" in safe, key
    assert (safe["race_requests"], safe["race_wins"], safe["race_rejections"]) == ("80", "4", "76")
    assert safe["race_mode"] == "last-byte"
    assert safe["race_passed"] == "True"
    for key in ("race_med_ms", "race_p95_ms", "race_p99_ms", "race_max_ms"):
        assert float(safe[key]) > 0, key
    assert float(safe["race_p95_ms"]) <= float(safe["race_max_ms"])
    assert unsafe["race_passed"] == "False"
    assert int(unsafe["race_double_bookings"]) > 0
    two = props["test_two_calls"]
    assert (two["race_requests"], two["race_wins"], two["race_passed"]) == ("10", "2", "True")
    assert (two["race2_requests"], two["race2_wins"], two["race2_rejections"]) == ("5", "0", "5")

    document = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    validate(document)
    names = [race["name"] for race in document["races"]]
    assert "test_races.py::test_two_calls #2" in names
    assert all(race["history"] is not None for race in document["races"])


# -- HTML ------------------------------------------------------------------------------------------

EXTERNAL = re.compile(r"""<[a-z][^<>]*?\b(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", re.IGNORECASE)
"""A tag with a src/href to another host; escaped data has no literal ``<`` so cannot match."""


def assert_self_contained(text: str) -> None:
    lowered = text.lower()
    for needle in ("<script src", "<link", "@import", "url(http", "url(//", "<img", "<iframe"):
        assert needle not in lowered, needle
    assert not EXTERNAL.search(text)


def test_race_html_is_one_self_contained_file(pytester: pytest.Pytester) -> None:
    run_races(pytester, "--race-html", "r.html")
    assert sorted(p.name for p in pytester.path.glob("r.*")) == ["r.html"]
    text = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert_self_contained(text)
    # the only URLs are the text of what was raced: the sample service, never a link
    urls = re.findall(r"\w+://[^\s<\"']*", text)
    assert all(url.startswith("http://127.0.0.1:") for url in urls), urls
    assert text.startswith("<!DOCTYPE html>")
    assert SAFE in text
    assert UNSAFE in text
    assert text.count('<svg class="histogram"') == 2
    assert text.count('<svg class="timeline"') == 8  # 4 resources per race
    assert text.count('<svg class="bar"') == 4
    assert text.count('<table class="requests"') == 2
    assert text.count("All 80 requests") == 2
    assert "PASS" in text
    assert "unchecked" in text  # the unsafe race ran with check=False
    assert "too-many" in text
    # the race that broke its rule comes first, in the summary and in the sections
    assert text.index(f'title="{UNSAFE}"') < text.index(f'title="{SAFE}"')
    sections = re.findall(r'<section id="race-(\d)"><h2>(.*?) <span', text)
    assert [(i, name.replace("<wbr>", "")) for i, name in sections] == [("0", UNSAFE), ("1", SAFE)]


def test_the_page_inlines_its_stylesheet_and_script_from_package_data() -> None:
    """page.css and page.js ship as package data (read as installed, not from the source tree)
    and each stands whole, once, inside its tag."""
    assets = resources.files("pytest_seatrace.report.html")
    css = assets.joinpath("page.css").read_text(encoding="utf-8")
    script = assets.joinpath("page.js").read_text(encoding="utf-8")
    assert ".verdict.FAIL" in css
    assert '"use strict"' in script
    text = render_html(json_document([synthetic_race("t.py::test_x", 2, 5, unsafe=False)], seed=1))
    assert text.count(f"<style>\n{css}</style>") == 1
    assert text.count(f"<script>\n{script}</script>") == 1


class SvgCensus(html.parser.HTMLParser):
    """Counts svg elements and the shapes inside them in an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.svgs = 0
        self.shapes: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1
            self.depth += 1
        elif self.depth:
            self.shapes[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.shapes[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.depth -= 1


def census(text: str) -> SvgCensus:
    parser = SvgCensus()
    parser.feed(text)
    parser.close()
    return parser


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install -y chromium)")
    return path


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium with every background fetch off: the page alone decides what loads."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=BROWSER_TIMEOUT, check=False)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.chromium
def test_race_html_renders_in_chromium(pytester: pytest.Pytester, tmp_path: Path) -> None:
    chromium()
    run_races(pytester, "--race-html", "r.html")
    page = pytester.path / "r.html"
    source = census(page.read_text(encoding="utf-8"))

    dumped = run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
    dom = census(dumped.stdout.decode("utf-8"))
    assert dom.svgs == source.svgs >= 2 * (1 + 2 + 4)
    for shape in ("rect", "circle", "line", "text"):
        assert dom.shapes[shape] > 0, shape
    assert dom.shapes["circle"] >= 160  # one dot per request: 2 races × 80
    assert dom.shapes == source.shapes

    shot = tmp_path / "shot.png"
    taken = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
    assert taken.returncode == 0, taken.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1400, 2000)
    assert len(data) > 50_000  # a blank page of this size is a few KB


# -- render_html on its own -------------------------------------------------------------------------


def synthetic_race(
    name: str,
    resources: int,
    concurrency: int,
    *,
    unsafe: bool,
    early: float = 0.0,
    checked: bool = True,
    interrupted: bool = False,
) -> RaceDoc:
    """A race dict made by the real result code, from records made up here (seeded); ``early``
    is the share of rejections answered early."""
    rng = random.Random(f"{name}-{resources}-{concurrency}")  # noqa: S311 - test data
    t0 = time.perf_counter_ns()
    records = []
    for index in range(resources):
        start = t0 + index * 50_000_000
        winner = rng.randrange(concurrency)
        for client in range(concurrency):
            sent = start + rng.randrange(500_000)
            rec = Record(resource=index, client=client + 1, round=1, sent_ns=sent)
            rec.end_ns = sent + rng.randrange(1_000_000, 40_000_000)
            roll = rng.random()
            if (unsafe and roll < 0.3) or client == winner:
                rec.status, rec.outcome, rec.body = 201, Outcome.WIN, b'{"order_id": 1, "note": "<b>&</b>"}'
            elif roll < 0.01:
                rec.status, rec.outcome, rec.reason = 503, Outcome.ERROR, "503 Service Unavailable"
            elif roll < 0.015:
                rec.outcome, rec.reason = Outcome.UNKNOWN, "timeout"
            else:
                rec.status, rec.outcome = 409, Outcome.REJECTION
                rec.early = rng.random() < early
            records.append(rec)
    lost = next(r for r in records if r.outcome is Outcome.REJECTION)  # one that never went out
    lost.sent_ns = lost.end_ns = lost.status = 0
    lost.outcome, lost.reason = Outcome.ERROR, "connect failed"
    config = RaceConfig(
        resources=tuple(range(1, resources + 1)),
        concurrency=concurrency,
        allow_errors=True,
        sync="last-byte",
    )
    run = RaceRun(records=tuple(records), duration=1.5, clock=(time.time_ns(), t0), interrupted=interrupted)
    result = RaceResult.from_run(name, config, run, checked=checked)
    return result.to_dict(history=True)


def test_render_html_escapes_every_string() -> None:
    race = synthetic_race("test_x.py::test_evil[<script>alert(1)</script>]", 2, 10, unsafe=True)
    race["error_reasons"] = {"<img src=x onerror=alert(2)>": 1}
    for wins in race["winners"].values():
        wins[0]["body"] = '</td><script src="https://evil.example/x.js"></script>'
    evil_id = '<svg onload=alert(3)>"'
    history = race["history"]
    assert history is not None
    history["resource"] = [evil_id if r == "1" else r for r in history["resource"]]
    race["resources"][0] = evil_id
    document = json_document([race], seed=7)
    document["argv"] = ["--race-html", "<iframe src=//evil.example>"]
    document["machine_info"]["node"] = '"><link rel=stylesheet href=http://evil.example/s.css>'
    validate(document)
    text = render_html(document)
    assert_self_contained(text)
    # the page's only script is the fixed one: no data of the report inside it
    assert text.lower().count("<script") == 1
    assert text.count(f"<script>{SCRIPT}</script>") == 1
    assert "<svg onload" not in text
    assert "&lt;svg onload=alert(3)&gt;&quot;" in text  # in the timeline and the request table
    assert text.count("&lt;svg onload=alert(3)&gt;&quot;") >= 10
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "&lt;/td&gt;&lt;script src=&quot;https://evil.example/x.js&quot;&gt;" in text
    assert "&lt;iframe src=//evil.example&gt;" in text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in text  # the winner's body, escaped once


def test_render_html_of_50000_requests_is_fast_and_small() -> None:
    races = [synthetic_race("test_big.py::test_unsafe", 500, 100, unsafe=True)]
    races.append(synthetic_race("test_big.py::test_one_seat", 1, 50_000, unsafe=False))
    document = json_document(races, seed=1)
    started = time.perf_counter()
    text = render_html(document)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"{elapsed:.2f}s"
    assert len(text.encode()) < 6_000_000, len(text)
    assert_self_contained(text)
    found = census(text)
    timelines = text.count('<svg class="timeline"')
    assert 32 <= timelines <= 96 + 1
    assert "more resources not drawn" in text
    # at most ~200 requests per resource, winners always: one dot each
    assert found.shapes["circle"] <= timelines * (MAX_DRAWN_PER_RESOURCE + 100)
    assert "1 never sent" in text


def test_render_html_samples_but_keeps_every_winner() -> None:
    race = synthetic_race("test_one.py::test_seat", 1, 5_000, unsafe=False)
    text = render_html(json_document([race], seed=0))
    timeline = text[text.index('<svg class="timeline"') :]
    timeline = timeline[: timeline.index("</svg>")]
    assert timeline.count("<circle") == MAX_DRAWN_PER_RESOURCE
    winners = timeline[timeline.index('<g class="win">') :]
    assert winners.count("<circle") == 1 == race["wins"]
    assert 'r="4"' in winners


def test_render_html_without_history_falls_back_to_percentiles() -> None:
    race = synthetic_race("test_lost.py::test_worker_crashed", 2, 10, unsafe=False)
    race["history"] = None
    race["worker"] = "gw1"
    document = json_document([race], seed=0)
    validate(document)
    text = render_html(document)
    assert '<svg class="percentiles"' in text
    assert '<svg class="timeline"' not in text
    assert text.count('<svg class="bar"') == 1  # outcomes; statuses need the history for colours
    assert '<table class="requests"' not in text
    assert "No request history" in text
    assert "gw1" in text


def test_render_html_with_no_races() -> None:
    text = render_html(json_document([], seed=0))
    assert "No race ran." in text
    assert_self_contained(text)


def section(text: str, index: int) -> str:
    """One race's section of a report."""
    start = text.index(f'<section id="race-{index}">')
    return text[start : text.index("</section>", start)]


def request_rows(part: str) -> list[str]:
    """The rows of the request table in one section."""
    table = part[part.index('<table class="requests"') :]
    table = table[: table.index("</table>")]
    return re.findall(r"<tr data-n=.*?</tr>", table)


def test_render_html_lists_failing_races_first() -> None:
    races = [
        synthetic_race("t.py::test_pass", 2, 10, unsafe=False),
        synthetic_race("t.py::test_interrupted", 2, 10, unsafe=False, interrupted=True),
        synthetic_race("t.py::test_unchecked", 2, 10, unsafe=True, checked=False),
        synthetic_race("t.py::test_pass_too", 2, 10, unsafe=False),
        synthetic_race("t.py::test_fail", 2, 10, unsafe=True),
    ]
    text = render_html(json_document(races, seed=0))
    expected = ["t.py::test_fail", "t.py::test_unchecked", "t.py::test_interrupted"]
    expected += ["t.py::test_pass", "t.py::test_pass_too"]
    summary = text[text.index("<h2>Summary</h2>") : text.index('<section id="race-0">')]
    links = re.findall(r'<a href="#race-(\d)" title="([^"]*)">', summary)
    assert links == [(str(i), name) for i, name in enumerate(expected)]
    verdicts = re.findall(r'<td class="verdict (\w+)">', summary)
    assert verdicts == ["FAIL", "unchecked", "INTERRUPTED", "PASS", "PASS"]
    for i, name in enumerate(expected):
        assert f"<h2>{name.replace('::', '::<wbr>')} " in section(text, i)
    assert "1 FAIL" in text
    assert "1 unchecked" in text
    assert "1 INTERRUPTED" in text


def test_render_html_request_table_keeps_the_telling_requests_and_says_its_cap() -> None:
    race = synthetic_race("t.py::test_busy", 2, 3_000, unsafe=False, early=0.01)
    history = race["history"]
    assert history is not None
    total = len(history["outcome"])
    telling = sum(
        1
        for outcome, early in zip(history["outcome"], history["early"], strict=True)
        if outcome != "rejection" or early
    )
    assert race["early"] > 10
    assert 40 < telling < MAX_TABLE_ROWS
    text = render_html(json_document([race], seed=0))
    part = section(text, 0)
    rows = request_rows(part)
    assert len(rows) == MAX_TABLE_ROWS
    assert f"{MAX_TABLE_ROWS:,} of {total:,} requests (at most {MAX_TABLE_ROWS:,} rows here)" in part
    assert "The JSON report has every request." in part
    outcomes = Counter(re.search(r'data-o="(\w+)"', row).group(1) for row in rows)  # type: ignore[union-attr]
    wanted = Counter(history["outcome"])
    for outcome in ("win", "error", "unknown"):
        assert outcomes[outcome] == wanted[outcome] > 0, outcome
    early_rows = [row for row in rows if " data-early" in row]
    assert len(early_rows) == race["early"]
    assert all('<i class="sw early"></i>early</td>' in row for row in early_rows)
    assert all('class="win"' in row for row in rows if 'data-o="win"' in row)
    # in sending order (never-sent requests last), each row's sort key beside its number
    sent = [float(re.search(r'<td data-k="([-\d.]+)">', row).group(1)) for row in rows]  # type: ignore[union-attr]
    unsent = sent.count(-1)
    assert unsent == 1
    assert sent[-unsent:] == [-1]
    assert sent[:-unsent] == sorted(sent[:-unsent])


def test_render_html_request_tables_share_a_budget() -> None:
    races = [synthetic_race(f"t.py::test_{i}", 1, 2_500, unsafe=False) for i in range(12)]
    text = render_html(json_document(races, seed=0))
    sizes = [len(request_rows(section(text, i))) for i in range(12)]
    full = MAX_TABLE_ROWS_TOTAL // MAX_TABLE_ROWS
    assert sizes == [MAX_TABLE_ROWS] * full + [MIN_TABLE_ROWS] * (12 - full)
    assert f"{MIN_TABLE_ROWS:,} of 2,500 requests (at most {MIN_TABLE_ROWS:,} rows here)" in text


def test_render_html_of_an_empty_race_draws_no_chart() -> None:
    config = RaceConfig(resources=(1, 2), concurrency=5)
    empty = RaceResult.from_run("t.py::test_empty", config, RaceRun(records=(), duration=0.0))
    races = [empty.to_dict(history=True), synthetic_race("t.py::test_full", 1, 5, unsafe=False)]
    text = render_html(json_document(races, seed=0))
    part = section(text, 0 if "test_empty" in section(text, 0) else 1)
    assert "made no requests" in part
    assert "<svg" not in part
    assert '<table class="requests"' not in part
    assert census(text).svgs > 0  # the other race still has its charts


def test_render_html_of_a_race_that_sent_nothing_draws_no_empty_chart() -> None:
    config = RaceConfig(resources=(1,), concurrency=3, allow_errors=True)
    records = [
        Record(resource=0, client=c, round=1, outcome=Outcome.ERROR, reason="connect failed")
        for c in range(1, 4)
    ]
    race = RaceResult.from_run("t.py::test_down", config, RaceRun(records=tuple(records), duration=0.1))
    text = render_html(json_document([race.to_dict(history=True)], seed=0))
    assert "No request got its response in time" in text
    assert "No request was sent, so no timelines." in text
    assert '<svg class="histogram"' not in text
    assert '<svg class="percentiles"' not in text


def test_render_html_gives_each_outcome_one_colour_everywhere() -> None:
    race = synthetic_race("t.py::test_colours", 3, 100, unsafe=False, early=0.1)
    history = race["history"]
    assert history is not None
    assert {"error", "unknown"} <= set(history["outcome"])
    text = render_html(json_document([race], seed=0))
    colour = {}
    for outcome in ("win", "rejection", "error", "unknown"):
        svg = re.search(rf"svg \.{outcome} {{ fill: (var\(--\w+\)); stroke: \1; }}", text)
        swatch = re.search(rf"i\.sw\.{outcome} {{ background: (var\(--\w+\)); }}", text)
        assert svg is not None, outcome
        assert swatch is not None, outcome
        assert svg.group(1) == swatch.group(1), outcome
        colour[outcome] = svg.group(1)
    assert len(set(colour.values())) == 4
    # the status bar colours each status by the outcome its requests got: "no response" is red
    # for connection errors and amber for timeouts, as in the outcome bar and the histogram
    bar = re.search(r'<svg class="bar".*?</svg>', text)
    assert bar is not None
    found = re.findall(r'<rect class="(\w+)"[^>]*><title>([^<(]+?) \d[\d,]* \(', bar.group(0))
    parts = {name: cls for cls, name in found}
    assert len(parts) == len(found)
    assert parts["201"] == "win"
    assert parts["409"] == "rejection"
    assert parts["503"] == "error"
    assert parts["no response error"] == "error"
    assert parts["no response unknown"] == "unknown"
    # early answers are hollow markers in the timelines and marked in the table
    assert text.count('<circle class="early"') == race["early"]
    assert f"early answers: <b>{race['early']} of {race['requests']}</b>" in text


def test_percentile_labels_get_rows_of_their_own_when_close() -> None:
    placed = place_labels([(300.0, "p50 24.2"), (500.0, "p95 38.1"), (510.0, "p99 38.4")], 628)
    rows = {text: row for _, row, _, text in placed}
    assert rows["p50 24.2"] == rows["p95 38.1"] == 0
    assert rows["p99 38.4"] == 1
    # at the right edge a label goes left of its line
    edge = place_labels([(620.0, "p99 99.9")], 628)
    assert edge[0][2] == "end"
    assert edge[0][0] < 620


HARNESS_BEFORE = """<script>window.__table = "{table}"; window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });</script>"""
HARNESS_AFTER = """<script>(function () {
  var out = {errors: window.__errors};
  var table = document.getElementById(window.__table);
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = function () { return Array.prototype.slice.call(table.tBodies[0].rows); };
  var col = heads.findIndex(function (h) { return h.textContent.indexOf("latency ms") === 0; });
  var button = heads[col].querySelector("button");
  out.buttons = heads.filter(function (h) { return h.querySelector("button"); }).length;
  button.click();
  out.ascending = rows().map(function (r) { return Number(r.cells[col].getAttribute("data-k")); });
  out.ariaSort = heads[col].getAttribute("aria-sort");
  button.click();
  out.descending = rows().map(function (r) { return Number(r.cells[col].getAttribute("data-k")); });
  var box = document.querySelector('div.tools[data-table="' + window.__table + '"]');
  out.toolsHidden = box.hidden;
  var input = box.querySelector("input");
  input.value = "503";
  input.dispatchEvent(new Event("input"));
  out.textFilter = rows().filter(function (r) { return !r.hidden; }).map(function (r) {
    return r.cells[4].textContent; });
  input.value = "";
  input.dispatchEvent(new Event("input"));
  var select = box.querySelector("select");
  select.value = "early";
  select.dispatchEvent(new Event("change"));
  out.earlyShown = rows().filter(function (r) { return !r.hidden; }).length;
  out.earlyCount = box.querySelector("output").textContent;
  out.labels = Array.prototype.map.call(document.querySelectorAll("svg.histogram"), function (svg) {
    return Array.prototype.map.call(svg.querySelectorAll("text.pct-label"), function (t) {
      var b = t.getBBox();
      return [b.x, b.y, b.width, b.height, t.textContent];
    });
  });
  out.wrapped = Array.prototype.filter.call(document.querySelectorAll("td"), function (td) {
    if (td.matches(".name, .wrap, .body") || !td.textContent.trim()) { return false; }
    var tops = [];
    var walk = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
      var range = document.createRange();
      range.selectNodeContents(walk.currentNode);
      Array.prototype.forEach.call(range.getClientRects(), function (r) { tops.push(r.top); });
    }
    return Math.max.apply(null, tops) - Math.min.apply(null, tops) > 6;  // a second line of text
  }).map(function (td) { return td.textContent; });
  var pre = document.createElement("pre");
  pre.id = "harness";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}());</script>"""


@pytest.mark.chromium
def test_render_html_tables_sort_filter_and_labels_hold_in_chromium(tmp_path: Path) -> None:
    """The page's script really sorts and filters (driven from a test script in Chromium), the
    percentile labels do not overlap and no figure wraps, at a narrow window."""
    chromium()
    races = [
        synthetic_race("t.py::test_" + "long_name_" * 6, 3, 100, unsafe=False, early=0.1),
        synthetic_race("t.py::test_unsafe", 2, 30, unsafe=True),
    ]
    text = render_html(json_document(races, seed=0))
    index = 0 if "long_name_" in section(text, 0) else 1
    assert "long_name_" in section(text, index)
    before = HARNESS_BEFORE.replace("{table}", f"req-{index}")
    text = text.replace("<head>", "<head>" + before, 1).replace("</body>", HARNESS_AFTER + "</body>")
    page = tmp_path / "harness.html"
    page.write_text(text, encoding="utf-8")
    dumped = run_chromium(tmp_path, "--window-size=900,1200", "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
    found = re.search(r'<pre id="harness">(.*?)</pre>', dumped.stdout.decode("utf-8"), re.DOTALL)
    assert found is not None, dumped.stdout.decode("utf-8")[-2000:]
    out = json.loads(html.unescape(found.group(1)))
    assert out["errors"] == []
    assert out["buttons"] == 10
    assert out["toolsHidden"] is False
    history = races[0]["history"]
    assert history is not None
    assert len(out["ascending"]) == len(history["outcome"])
    assert out["ascending"] == sorted(out["ascending"])
    assert out["ariaSort"] == "ascending"
    assert out["descending"] == sorted(out["descending"], reverse=True)
    assert out["textFilter"]
    assert set(out["textFilter"]) == {"503"}
    assert out["earlyShown"] == races[0]["early"] > 0
    assert out["earlyCount"] == f"{races[0]['early']} of {len(history['outcome'])} rows"
    for labels in out["labels"]:
        assert len(labels) == 3, labels
        for k, (x1, y1, w1, h1, t1) in enumerate(labels):
            for x2, y2, w2, h2, t2 in labels[k + 1 :]:
                apart = x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
                assert apart, (t1, t2, labels)
    assert out["wrapped"] == []


def test_render_html_says_what_was_raced_and_shows_sample_responses() -> None:
    race: dict[str, Any] = dict(synthetic_race("t.py::test_said", 2, 10, unsafe=True))
    race["raced"] = {
        "method": "POST",
        "url": "https://shop.example/orders?<script>x</script>",
        "base_url": None,
        "http_version": "HTTP/1.1",
        "stripped": ["userinfo", "query token"],
        "sync": "last-byte",
        "hold": "headers",
    }
    sample = {"client": 3, "round": 1, "status": 409, "outcome": "rejection", "latency_ns": 2_500_000}
    sample |= {"early": True, "body": '{"error": "<b>taken</b>"}', "reason": ""}
    race["samples"] = {"2": [sample], "1": []}
    text = render_html(json_document([race], seed=0))  # type: ignore[list-item]
    assert "raced: <b>POST https://shop.example/orders?&lt;script&gt;x&lt;/script&gt;</b>" in text
    assert "start: <b>last-byte, hold: headers</b>" in text
    assert "stripped from the URLs shown: <b>userinfo, query token</b>" in text
    assert "hold: <b>headers</b>" not in text  # said once, in the start fact
    samples = text[text.index("<h3>Sample responses</h3>") :]
    samples = samples[: samples.index("</table>")]
    assert samples.count("<tr><td") == 1
    assert '<i class="sw rejection"></i>rejection' in samples
    assert '<i class="sw early"></i>early' in samples
    assert "&lt;b&gt;taken&lt;/b&gt;" in samples
    assert "<td>2.50</td>" in samples
    # an older document, without these keys, renders without them
    for key in ("raced", "samples"):
        race.pop(key)
    older = render_html(json_document([race], seed=0))  # type: ignore[list-item]
    assert "raced:" not in older
    assert "Sample responses" not in older
    assert "hold: <b>" in older
