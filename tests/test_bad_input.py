"""Bad input a hostile-but-realistic user gives: each one a named error before the race, at
start-up where it can be (the option or argument, the value, what is allowed)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_seatrace import Race, RaceUsageError
from pytest_seatrace.engine.limits import MAX_RESPONSE_HEAD, STATUS_FIELD
from pytest_seatrace.marker import MarkerError
from pytest_seatrace.marker import race as marker_schema
from tests.support import INNER_INI, raw_server, read_request_head
from tests.test_plugin import literal

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

NOWHERE = "http://127.0.0.1:9/x"
"""A URL nothing answers: a bad argument must be refused before any connection is tried."""

REQUEST_MODES = pytest.mark.parametrize("sync", ["last-byte", "gate", "single-packet"])


SEATS_TEST = """
def test_seats(seats):
    assert seats.post(lambda a: f"/seat/{a.resource}").wins == 1
"""


# -- --race-base-url: refused at start-up, not by every race ---------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1", "'http://[::1' is not a valid URL (Invalid port: ':1'); expected http[s]://host*"),
        ("http://localhost:99999", "'http://localhost:99999': port 99999 is not between 1 and 65535"),
        ("http://exa mple.com", "'http://exa mple.com' contains whitespace; expected*"),
    ],
)
def test_bad_base_url_option_is_a_usage_error(inner: pytest.Pytester, url: str, problem: str) -> None:
    inner.makepyfile(SEATS_TEST)
    result = inner.runpytest(f"--race-base-url={url}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([literal(f"*argument --race-base-url: {problem}")])
    assert "test_seats" not in result.stdout.str()


def test_bad_base_url_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "race_base_url = http://[::1\n")
    pytester.makepyfile(SEATS_TEST)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = "*race_base_url = 'http://[::1' (ini): 'http://[::1' is not a valid URL*"
    result.stderr.fnmatch_lines([literal(message)])


def test_ipv6_base_url_in_brackets_is_accepted(inner: pytest.Pytester) -> None:
    inner.makepyfile(SEATS_TEST)
    result = inner.runpytest("--race-base-url=http://[::1]:8000/api/")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([literal("seatrace: *base_url=http://[::1]:8000/api*")])


def test_bad_base_url_set_by_a_test_is_named(race: Race) -> None:
    race.base_url = "http://[::1"
    with pytest.raises(RaceUsageError, match=r"^race.base_url = 'http://\[::1' is not a valid URL"):
        race.post("/x", concurrency=2)


# -- request arguments: the argument, the attempt, the value, what is allowed ----------------


@REQUEST_MODES
def test_url_callable_returning_an_int_names_the_attempt(
    race: Race, request: pytest.FixtureRequest, sync: str
) -> None:
    with pytest.raises(RaceUsageError) as info:
        race.post(lambda a: 5, resources=["A"], concurrency=1, sync=sync)
    assert str(info.value) == (
        f"race.post in {request.node.nodeid}: url= callable returned 5 for attempt r1-A-1: expected a "
        "URL string (absolute, or relative to the base URL) or an httpx.URL"
    )


@pytest.mark.parametrize(
    "headers",
    [{"X-Note": "a\r\nInjected: 1"}, [(b"X-Note", b"a\nb")], {"X-Note": "a\rb"}],
    ids=["crlf", "lf-bytes", "cr"],
)
def test_crlf_in_a_header_value_is_refused(race: Race, headers: object) -> None:
    message = r"^headers=.*: header 'X-Note': CR/LF not allowed in a header value"
    with pytest.raises(RaceUsageError, match=message):
        race.post(NOWHERE, headers=headers, concurrency=2)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"X-Note": "a\0b"}, "header 'X-Note': NUL not allowed in a header value"),
        ({"X-Note": " padded"}, "header 'X-Note': no leading or trailing whitespace allowed"),
        ({"X Note": "v"}, "'X Note' is not a header name"),
        ({"X:Note": "v"}, "'X:Note' is not a header name"),
    ],
)
def test_other_headers_http_refuses_are_named(race: Race, headers: object, problem: str) -> None:
    with pytest.raises(RaceUsageError, match=f"^headers=.*: {problem}"):
        race.post(NOWHERE, headers=headers, concurrency=2)


@REQUEST_MODES
def test_crlf_from_a_headers_callable_names_the_attempt(
    race: Race, request: pytest.FixtureRequest, sync: str
) -> None:
    with pytest.raises(RaceUsageError) as info:
        race.post(
            NOWHERE, headers=lambda a: {"X-Key": f"{a.key}\r\n"}, resources=["A"], concurrency=1, sync=sync
        )
    assert str(info.value) == (
        f"race.post in {request.node.nodeid}: headers= callable returned "
        "{'X-Key': 'r1-A-1\\r\\n'} for attempt r1-A-1: header 'X-Key': CR/LF not allowed in a header "
        "value ('r1-A-1\\r\\n')"
    )


def test_open_file_as_content_is_refused(race: Race, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"seat": 1}')
    with body.open("rb") as file, pytest.raises(RaceUsageError) as info:
        race.post(NOWHERE, content=file, concurrency=2)
    assert str(info.value).startswith("content=<_io.BufferedReader name=")
    assert str(info.value).endswith(
        ": expected bytes or str (a file or an iterator would be read once, but every client sends "
        "its own copy: pass its bytes, such as f.read())"
    )


@REQUEST_MODES
def test_iterator_from_a_content_callable_is_refused(race: Race, sync: str) -> None:
    message = r"content= callable returned <.*iterator.*> for attempt r1-A-1: expected bytes or str"
    with pytest.raises(RaceUsageError, match=message):
        race.post(NOWHERE, content=lambda a: iter([b"a", b"b"]), resources=["A"], concurrency=1, sync=sync)


# -- hold= with a start mode that has no hold point --------------------------------------------


@pytest.mark.parametrize("sync", ["gate", "single-packet"])
def test_hold_with_a_holdless_start_is_refused_in_the_call(race: Race, sync: str) -> None:
    message = rf"^race.post: hold='body': a hold point is for last-byte starts; sync='{sync}'"
    with pytest.raises(RaceUsageError, match=message):
        race.post(NOWHERE, sync=sync, hold="body", concurrency=2)


def test_hold_with_gate_on_a_marker_fails_its_test_at_setup(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.race(sync="gate", hold="headers")
        def test_bad(race):
            raise AssertionError("never runs")

        def test_fine():
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.race on test_bad: hold='headers': a hold point is for last-byte starts; "
            "sync='gate' sends each whole request when the gate opens: drop hold= or use sync='last-byte'"
        ]
    )


def test_session_hold_with_a_gate_marker_names_the_option(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        from pytest_seatrace import Race, RaceUsageError

        @pytest.mark.race(sync="gate")
        def test_gate(race):
            message = "hold='body': from --race-hold .race_hold.; a hold point"
            with pytest.raises(RaceUsageError, match=message):
                race.post("http://127.0.0.1:9/x", concurrency=2)

        def test_run_ignores_the_session_hold(seats):
            async def attempt(a):
                await a.gate()
                return await a.http.post(f"/seat/{a.resource}")

            assert seats.run(attempt, concurrency=3).wins == 1
        """
    )
    inner.runpytest("--race-hold=body").assert_outcomes(passed=2)


@pytest.mark.parametrize("sync", ["gate", "single-packet"])
@pytest.mark.parametrize("where", ["cli", "ini"])
def test_session_hold_with_a_holdless_session_sync_is_a_usage_error(
    pytester: pytest.Pytester, sync: str, where: str
) -> None:
    args: tuple[str, ...] = ()
    if where == "ini":
        pytester.makeini(INNER_INI + f"race_sync = {sync}\nrace_hold = body\n")
    else:
        pytester.makeini(INNER_INI)
        args = ("--race-sync", sync, "--race-hold", "body")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--race-hold body (race_hold) with --race-sync {sync} (race_sync): a hold point is for last-byte*"]
    )


# -- resources whose ids merge once written as text --------------------------------------------


@pytest.mark.parametrize(
    ("resources", "first", "second"),
    [([1, "1"], "1", "'1'"), (["A", 2, "2"], "2", "'2'"), ([None, "None"], "None", "'None'")],
)
def test_resource_ids_that_collide_in_json_are_refused(
    resources: list[object], first: str, second: str
) -> None:
    with pytest.raises(MarkerError) as info:
        marker_schema(resources=resources)
    assert str(info.value) == (
        f"resources={resources!r}: ids {first} and {second} are both written {str(resources[-1])!r} in the "
        "reports (JSON keys, summary, HTML); use ids whose str() differs"
    )


def test_colliding_resource_ids_in_a_call_are_named(race: Race) -> None:
    message = r"^race.post: resources=\[1, '1'\]: ids 1 and '1' are both written '1'"
    with pytest.raises(RaceUsageError, match=message):
        race.post(NOWHERE, resources=[1, "1"], concurrency=2)


# -- --race-json and --race-html on one path -------------------------------------------------


@pytest.mark.parametrize(
    ("json_path", "html_path"),
    [
        ("r.json", "r.json"),
        ("./r.json", "r.json"),
        ("r.json", "sub/../r.json"),
        ("/dev/stdout", "/dev/stdout"),
    ],
)
def test_one_path_for_both_reports_is_a_usage_error(
    inner: pytest.Pytester, json_path: str, html_path: str
) -> None:
    (inner.path / "sub").mkdir()
    inner.makepyfile(SEATS_TEST)
    result = inner.runpytest(f"--race-json={json_path}", f"--race-html={html_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--race-json (race_json) and --race-html (race_html) name one file (*): one report would "
            "overwrite or run into the other; give each report its own path"
        ]
    )
    assert not (inner.path / "r.json").exists()


def test_a_symlink_or_a_hard_link_to_the_other_report_is_refused(inner: pytest.Pytester) -> None:
    inner.makepyfile(SEATS_TEST)
    (inner.path / "r.json").write_text("{}")
    (inner.path / "link.html").symlink_to("r.json")
    os.link(inner.path / "r.json", inner.path / "hard.html")
    for other in ("link.html", "hard.html"):
        result = inner.runpytest("--race-json=r.json", f"--race-html={other}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, other
        result.stderr.fnmatch_lines([f"*name one file (r.json and {other}*"])


def test_ini_reports_on_one_path_are_refused(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "race_json = out/r\nrace_html = out/r\n")
    (pytester.path / "out").mkdir()
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--race-json (race_json) and --race-html (race_html) name one file (out/r, that is *"]
    )


# -- the response-header limit, the same in every start mode ----------------------------------

BODY = b'{"ok": true}'


def big_head_after(head: Callable[[socket.socket], bytes], padding: int) -> Callable[[socket.socket], None]:
    """A keep-alive server answering every request with a header ``x-big`` of ``padding`` bytes
    (a HEAD without its body, as RFC 9110 says)."""

    def handle(conn: socket.socket) -> None:
        while True:
            request = head(conn)
            if not request:
                return
            fields = b"content-length: %d\r\nx-big: %s\r\n" % (len(BODY), b"x" * padding)
            payload = b"" if request.startswith(b"HEAD") else BODY
            try:
                conn.sendall(b"HTTP/1.1 201 Created\r\n" + fields + b"\r\n" + payload)
            except OSError:
                return

    return handle


def padding_for(size: int) -> int:
    """The ``x-big`` length that makes the head ``size`` bytes as the limit counts them."""
    return size - STATUS_FIELD - (32 + len(b"content-length") + len(b"%d" % len(BODY))) - (32 + len(b"x-big"))


@pytest.fixture
def big_head(request: pytest.FixtureRequest) -> Iterator[str]:
    with raw_server(big_head_after(read_request_head, request.param)) as url:
        yield url


HEAD_SIZES = pytest.mark.parametrize(
    ("big_head", "fits"),
    [(padding_for(MAX_RESPONSE_HEAD), True), (padding_for(MAX_RESPONSE_HEAD) + 1, False), (1 << 20, False)],
    ids=["at-the-limit", "one-byte-over", "1MB"],
    indirect=["big_head"],
)


@HEAD_SIZES
@pytest.mark.parametrize("sync", ["last-byte", "gate"])
def test_response_header_limit_is_one_in_http11_starts(
    race: Race, big_head: str, fits: bool, sync: str
) -> None:
    result = race.get(big_head + "/x", concurrency=3, sync=sync, timeout=5, check=False)
    assert result.mode == sync
    if fits:
        assert (result.wins, result.errors) == (3, 0), result.error_reasons
    else:
        assert result.errors == 3
        stated = "response header block larger than 64 KiB"  # as docs/how-it-works.md states it
        assert all(stated in reason for reason in result.error_reasons), result.error_reasons
