"""The plugin as users meet it, through pytester: options, marker, summary, xdist, async tests."""

from __future__ import annotations

import pytest

from tests.support import INNER_INI, SEATS_CONFTEST

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def literal(pattern: str) -> str:
    """An fnmatch pattern where ``[`` is literal (marker values are full of lists)."""
    return pattern.replace("[", "[[]")


def test_help_lists_group_options_and_ini(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-seatrace: concurrency invariants*"])
    for flag, ini in (
        ("--race-concurrency=N", "race_concurrency"),
        ("--race-resources=N", "race_resources"),
        ("--race-timeout=S", "race_timeout"),
        ("--race-base-url=URL", "race_base_url"),
        ("--race-sync=MODE", "race_sync"),
        ("--race-parallel=N|all", "race_parallel"),
        ("--race-rounds=N", "race_rounds"),
        ("--race-seed=N", "race_seed"),
        ("--race-json=PATH", "race_json"),
        ("--race-html=PATH", "race_html"),
        ("--race-summary=MODE", "race_summary"),
        ("--race-p95-ms=MS", "race_p95_ms"),
    ):
        result.stdout.fnmatch_lines([f"*{flag}*", f"*{ini} (string)*"])


def test_markers_lists_race(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.race(*, resources=*concurrency=100*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--race-concurrency", "0"], "argument --race-concurrency: 0 is below the minimum of 1"),
        (["--race-concurrency", "many"], "argument --race-concurrency: 'many' is not an integer*"),
        (["--race-timeout", "-1"], "argument --race-timeout: -1 is not a finite number > 0"),
        (
            ["--race-sync", "fast"],
            "argument --race-sync: invalid choice: 'fast' "
            "(choose from 'auto', 'gate', 'last-byte', 'single-packet', 'single-datagram')",
        ),
        (
            ["--race-summary", "loud"],
            "argument --race-summary: invalid choice: 'loud' (choose from 'auto', 'full', 'off')",
        ),
        (["--race-parallel", "some"], "argument --race-parallel: 'some' is not an integer >= 1 or 'all'"),
        (["--race-base-url", "localhost:8000"], "argument --race-base-url: 'localhost:8000' is not an http*"),
        (
            ["--race-json", "/nonexistent-dir/r.json"],
            "*--race-json /nonexistent-dir/r.json: directory*does not exist",
        ),
    ],
)
def test_bad_option_is_a_usage_error(inner: pytest.Pytester, args: list[str], message: str) -> None:
    inner.makepyfile("def test_x(): pass")
    result = inner.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("race_concurrency = abc", "race_concurrency = 'abc' (ini): 'abc' is not an integer*"),
        (
            "race_sync = fast",
            "race_sync = 'fast' (ini): 'fast' is not one of auto, gate, last-byte, single-packet, "
            "single-datagram; valid: auto, gate, last-byte, single-packet, single-datagram",
        ),
        ("race_rounds = 0", "race_rounds = '0' (ini): 0 is below the minimum of 1"),
    ],
)
def test_bad_ini_is_a_usage_error_naming_it(pytester: pytest.Pytester, ini: str, message: str) -> None:
    pytester.makeini(INNER_INI + ini + "\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_precedence_marker_cli_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "race_concurrency = 7\nrace_resources = 2\nrace_timeout = 3\n")
    pytester.makeconftest(SEATS_CONFTEST)
    pytester.makepyfile(
        """
        import pytest

        def test_ini(seats):
            r = seats.post(lambda a: f"/seat/{a.resource}")
            assert (r.concurrency, len(r.resources), r.settings["timeout_s"]) == (5, 2, 3.0)

        @pytest.mark.race(concurrency=3)
        def test_marker(seats):
            r = seats.post(lambda a: f"/seat/{a.resource}")
            assert (r.concurrency, len(r.resources)) == (3, 2)

        @pytest.mark.race(concurrency=3)
        def test_call(seats):
            r = seats.post(lambda a: f"/seat/{a.resource}", concurrency=4)
            assert r.concurrency == 4
        """
    )
    result = pytester.runpytest("--race-concurrency", "5")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["seatrace: concurrency=5, timeout=3s, sync=auto, parallel=1, seed=*"])


def test_marker_error_fails_only_its_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.race(concurency=3)
        def test_typo(race):
            pass

        def test_fine():
            pass
        """
    )
    result = inner.runpytest("--strict-markers")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_typo*",
            "@pytest.mark.race on test_typo: race() got an unexpected keyword argument 'concurency'",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("concurrency=0", "concurrency=0: expected an integer >= 1"),
        ("concurrency='9'", "concurrency='9': expected an integer >= 1"),
        ("resources=0", "resources=0: expected an integer >= 1"),
        ("resources=[]", "resources=[]: expected an integer >= 1 or a non-empty iterable*"),
        ("resources=['a', 'a']", "resources=['a', 'a']: expected distinct resource ids"),
        ("expect=-1", "expect=-1: expected an integer >= 0"),
        ("expect=range(0, 4, 2)", "expect=range(0, 4, 2): expected a non-empty range with step 1*"),
        (
            "success='2xx'",
            "success='2xx': expected a status code, an iterable of status codes, or a predicate",
        ),
        ("reject=[999]", "reject=[999]: expected status codes between 100 and 599, or a predicate"),
        ("timeout=0", "timeout=0: expected a number of seconds > 0"),
        (
            "thresholds=['p95 <']",
            "thresholds=['p95 <']: threshold 'p95 <' does not parse; expected '<metric>*",
        ),
        (
            "thresholds=['p42 < 1ms']",
            "thresholds=*: unknown metric 'p42'; expected*metric one of min, avg, med*",
        ),
        ("allow_errors='yes'", "allow_errors='yes': expected True or False"),
        ("rounds=0", "rounds=0: expected an integer >= 1"),
        (
            "sync='fast'",
            "sync='fast': expected one of 'auto', 'gate', 'last-byte', 'single-packet', 'single-datagram'",
        ),
        ("parallel=0", "parallel=0: expected an integer >= 1 or 'all'"),
        ("3", "race() takes 0 positional arguments but 1 was given"),
    ],
)
def test_each_bad_marker_value_is_named(inner: pytest.Pytester, marker: str, message: str) -> None:
    inner.makepyfile(
        f"""
        import pytest

        @pytest.mark.race({marker})
        def test_bad(race):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([literal(f"@pytest.mark.race on test_bad: {message}")])


def test_stacked_markers_merge_closest_first(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.race(resources=3, concurrency=6)

        @pytest.mark.race(concurrency=2)
        def test_merged(seats):
            r = seats.post(lambda a: f"/seat/{a.resource}")
            assert (len(r.resources), r.concurrency, r.requests) == (3, 2, 6)
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


SUMMARY_TESTS = """
import pytest

@pytest.mark.race(resources=4, concurrency=5)
def test_passing(seats):
    seats.post(lambda a: f"/seat/{a.resource}")

@pytest.mark.race(resources=2, concurrency=3)
def test_double(seats):
    seats.post("/same-seat-for-all")   # one path: 1 winner over 2 resources, 1 resource gets none
"""


def test_summary_default_table_and_status_codes(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the whole table; narrow terminals: test_summary_width.py
    inner.makepyfile(SUMMARY_TESTS)
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= race summary =*",
            "test*res × conc*requests*successes exp/act*rejections*errors*unknown*double*p50 ms*p95 ms*"
            "p99 ms*max ms*req/s*spread ms*mode*result",
            "*",
            "test_summary_default_table_and_status_codes.py::test_passing*4 × 5*20*4 / 4*16*0*0*0*gate*PASS",
            "test_summary_default_table_and_status_codes.py::test_double*2 × 3*6*2 / 1*5*0*0*0*gate*FAIL",
        ]
    )
    result.stdout.fnmatch_lines(["*201*5*19.23%", "*409*21*80.77%", "start mode: gate (2 races)"])
    assert "Seat 1:" not in result.stdout.str()
    assert result.stdout.str().count("race summary") == 1


def test_summary_verbose_adds_the_pattern(inner: pytest.Pytester) -> None:
    inner.makepyfile(SUMMARY_TESTS)
    result = inner.runpytest("-v")
    result.stdout.fnmatch_lines(
        [
            "*::test_passing (gate):",
            "Seat 1: 5 VUs → ✓ 1 success, ✗ 4 failures",
            "Seat 2: 5 VUs → ✓ 1 success, ✗ 4 failures",
            "Seat 3: 5 VUs → ✓ 1 success, ✗ 4 failures",
            "Seat 4: 5 VUs → ✓ 1 success, ✗ 4 failures",
            "Total: 20 requests, 4 successes, 16 failures",
        ]
    )
    result.stdout.fnmatch_lines(["Seat 2: 3 VUs → ✓ 0 successes, ✗ 3 failures", "*resource 2: too-few*"])


def test_summary_quiet_is_one_line(inner: pytest.Pytester) -> None:
    inner.makepyfile(SUMMARY_TESTS)
    result = inner.runpytest("-q")
    result.stdout.fnmatch_lines(["race summary: 2 races, 26 requests, 1 FAIL, 0 double bookings"])
    assert "res × conc" not in result.stdout.str()


def test_summary_full_and_off(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    inner.makepyfile(SUMMARY_TESTS)
    full = inner.runpytest("-q", "--race-summary", "full")
    full.stdout.fnmatch_lines(["*res × conc*", "Seat 1: 5 VUs → ✓ 1 success, ✗ 4 failures"])
    off = inner.runpytest("--race-summary", "off")
    assert "race summary" not in off.stdout.str()
    assert "res × conc" not in off.stdout.str()


def test_violation_message_points_at_the_test_line(inner: pytest.Pytester) -> None:
    inner.makepyfile(SUMMARY_TESTS)
    result = inner.runpytest()
    result.stdout.fnmatch_lines(
        [
            '>       seats.post("/same-seat-for-all")*',
            "E       pytest_seatrace.RaceViolation: race broke its invariant: 1 violation(s)*",
            "E*resource*violation*allowed*found*winners / detail",
            "E*2*too-few*1*0*no winner: *",
        ]
    )
    assert "from_thread.py" not in result.stdout.str()


def test_summary_merges_xdist_workers_once(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_a=SUMMARY_TESTS,
        test_b="""
        import pytest

        @pytest.mark.race(resources=3, concurrency=4)
        def test_more(seats):
            seats.post(lambda a: f"/seat/{a.resource}")
        """,
    )
    result = inner.runpytest("-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert out.count("race summary") == 1
    result.stdout.fnmatch_lines(["*201*8*21.05%", "*409*30*78.95%", "start mode: gate (3 races)"])
    assert "test_b.py::test_more" in out
    assert "test_a.py::test_passing" in out


ASYNC_TESTS = """
import pytest

{marker}
async def test_async_race(seats):
    r = await seats.apost(lambda a: f"/seat/{{a.resource}}", resources=3, concurrency=4)
    assert r.wins == 3

{marker}
async def test_async_run(seats):
    async def attempt(a):
        await a.gate()
        return await a.http.post(f"/seat/{{a.resource}}")
    r = await seats.arun(attempt, resources=2, concurrency=3)
    assert (r.wins, r.rejections) == (2, 4)

{marker}
async def test_sync_call_refused_inside_loop(seats):
    from pytest_seatrace import RaceUsageError
    with pytest.raises(RaceUsageError, match="would block the running event loop; use await race.apost"):
        seats.post("/seat/1")

def test_plain_sync(seats):
    async def attempt(a):
        await a.gate()
        return await a.http.post(f"/seat/{{a.resource}}")
    assert seats.run(attempt, resources=2, concurrency=3).wins == 2
"""


@pytest.mark.parametrize(
    ("marker", "args", "passed"),
    [
        ("@pytest.mark.asyncio", [], 4),
        ("", ["-o", "asyncio_mode=auto"], 4),
        ("@pytest.mark.anyio", ["-p", "no:asyncio"], 7),  # asyncio and trio backends
    ],
    ids=["asyncio-strict", "asyncio-auto", "anyio"],
)
def test_async_frameworks(inner: pytest.Pytester, marker: str, args: list[str], passed: int) -> None:
    inner.makepyfile(ASYNC_TESTS.format(marker=marker))
    if marker == "@pytest.mark.anyio":
        inner.makeini(INNER_INI.replace("asyncio_default_fixture_loop_scope = function\n", ""))
        inner.makeconftest(
            SEATS_CONFTEST
            + """
@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""
        )
    result = inner.runpytest(*args)
    result.assert_outcomes(passed=passed)


def test_thresholds_pass_and_fail_with_metric_value_and_bound(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.race(resources=2, concurrency=4, thresholds=["p95 < 10s", "errors == 0", "rps > 0.001"])
        def test_within(seats):
            seats.post(lambda a: f"/seat/{a.resource}")

        @pytest.mark.race(resources=2, concurrency=4, thresholds=["max < 1ns", "rps > 1000000000"])
        def test_beyond(seats):
            seats.post(lambda a: f"/seat/{a.resource}")
        """
    )
    result = inner.runpytest("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*threshold*max < 1ns*ms*max = *ms",
            "E*threshold*rps > 1000000000*rps = *",
        ]
    )
    result.stdout.fnmatch_lines(["*::test_beyond*FAIL", "*threshold (allowed max < 1ns, found *ms)*"])


def test_global_p95_option_applies_to_every_race(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_any(seats):
            seats.post("/seat/1", concurrency=3)
        """
    )
    inner.runpytest("--race-p95-ms", "60000").assert_outcomes(passed=1)
    failing = inner.runpytest("--race-p95-ms", "0.000001")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["E*threshold*p95 < 1e-06ms*"])


def test_rounds_report_the_violation_rate(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.race(concurrency=3, rounds=4)
        def test_flaky(seats):
            app = seats.app
            resets = []

            def reset():            # runs before rounds 2, 3 and 4
                resets.append(1)
                app.taken.clear()

            original = app.__call__

            async def double_in_even_rounds(scope, receive, send):
                if scope["type"] == "http" and len(resets) % 2 == 1:   # rounds 2 and 4
                    app.taken.discard(scope["path"])   # forget the booking: everyone wins
                await original(scope, receive, send)

            seats.app = double_in_even_rounds
            seats.post("/seat/1", reset=reset)
        """
    )
    result = inner.runpytest("-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E*race broke its invariant (too-many in 2 of 4 rounds)*", "too-many in 2 of 4 rounds"]
    )


def test_verify_failing_and_passing(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_held_matches(seats):
            seats.post("/seat/1", concurrency=4, verify=lambda seat: 1)

        def test_lost_booking(seats):
            seats.post("/seat/1", concurrency=4, verify=lambda seat: 0)

        def test_double_in_state(seats):
            seats.post("/seat/1", concurrency=4, verify=lambda seat: 2)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["E*lost*>= 1*0*acknowledged wins missing from state*"])
    result.stdout.fnmatch_lines(["E*phantom*<= 1*2*", "E*double*1*2*held in the final state*"])


def test_base_url_option_and_ini_feed_race_base_url(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INNER_INI + "race_base_url = http://from-ini.test\n")
    pytester.makepyfile(
        """
        import os

        def test_base(race):
            assert race.base_url == os.environ["EXPECTED_BASE_URL"]
        """
    )
    monkeypatch.setenv("EXPECTED_BASE_URL", "http://from-ini.test")
    pytester.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv("EXPECTED_BASE_URL", "http://from-cli.test")
    pytester.runpytest("--race-base-url", "http://from-cli.test/").assert_outcomes(passed=1)


def test_unquoted_number_in_native_toml_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        '[tool.pytest]\nasyncio_default_fixture_loop_scope = "function"\nrace_concurrency = 50\n'
    )
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:benchmark")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    # Newer pytest reports the type itself; older ones reach our parser, which says to quote it.
    result.stderr.fnmatch_lines(["*race_concurrency*expects a string*"])


def test_failed_test_shows_the_sample_service_log(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_fails(race, sample_service):
            race.post(sample_service.url + "/orders", json={"seats": [1], "user": "u"}, concurrency=2)
            assert False, "look at the log"
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- sample service log (safe, http://127.0.0.1:*) -*"])
