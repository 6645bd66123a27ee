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

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.core.records import RaceRun
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.report.files import json_document
from pytest_seatrace.report.html import MAX_DRAWN_PER_RESOURCE, render_html
from pytest_seatrace.results import Outcome, Record

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
    text = resources.files("pytest_seatrace").joinpath("report.schema.json").read_text(encoding="utf-8")
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
        stamps = zip(history["start_ns"], history["end_ns"], strict=True)
        assert all(sent > 0 and end >= sent for sent, end in stamps)
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
    assert "http://" not in text  # nor in the data: these races put no URL in any field
    assert "https://" not in text
    assert text.startswith("<!DOCTYPE html>")
    assert SAFE in text
    assert UNSAFE in text
    assert text.count('<svg class="histogram"') == 2
    assert text.count('<svg class="timeline"') == 8  # 4 resources per race
    assert text.count('<svg class="bar"') == 4
    assert "PASS" in text
    assert "FAIL" in text
    assert "too-many" in text


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


def synthetic_race(name: str, resources: int, concurrency: int, *, unsafe: bool) -> RaceDoc:
    """A race dict made by the real result code, from records made up here (seeded)."""
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
            records.append(rec)
    lost = next(r for r in records if r.outcome is Outcome.REJECTION)  # one that never went out
    lost.sent_ns = lost.end_ns = lost.status = 0
    lost.outcome, lost.reason = Outcome.ERROR, "connect failed"
    config = RaceConfig(
        resources=tuple(range(1, resources + 1)),
        concurrency=concurrency,
        allow_errors=True,
    )
    run = RaceRun(records=tuple(records), duration=1.5, clock=(time.time_ns(), t0))
    result = RaceResult.from_run(name, config, run)
    return result.to_dict(history=True)


def test_render_html_escapes_every_string() -> None:
    race = synthetic_race("test_x.py::test_evil[<script>alert(1)</script>]", 2, 10, unsafe=True)
    race["error_reasons"] = {"<img src=x onerror=alert(2)>": 1}
    for wins in race["winners"].values():
        wins[0]["body"] = '</td><script src="https://evil.example/x.js"></script>'
    document = json_document([race], seed=7)
    document["argv"] = ["--race-html", "<iframe src=//evil.example>"]
    document["machine_info"]["node"] = '"><link rel=stylesheet href=http://evil.example/s.css>'
    validate(document)
    text = render_html(document)
    assert_self_contained(text)
    assert "<script" not in text.lower()
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
    assert "No request history" in text
    assert "gw1" in text


def test_render_html_with_no_races() -> None:
    text = render_html(json_document([], seed=0))
    assert "No race ran." in text
    assert_self_contained(text)
