"""The benchmarks' shared rules, without a service: target verdicts, the noise band of a
"no wider than" target, the seed scenario's server-spread target, the shared argument types."""

from __future__ import annotations

import argparse
import math
from collections import Counter

import pytest

from benchmarks import cli
from benchmarks.judge import INTERLEAVED_NOISE, Check, exit_status, no_wider, run_to_run_band
from benchmarks.peers import Run
from benchmarks.seed_scenario import server_spread_check

MS = 1_000_000


def run_with(spreads_ms: list[float]) -> Run:
    """A seed-scenario run whose seats had these server spreads."""
    return Run(
        tool="t",
        wall_s=1.0,
        requests=1600,
        statuses=Counter({201: 16}),
        transport_errors=0,
        latencies_ns=[],
        wins_by_seat={},
        server_spreads=[round(s * MS) for s in spreads_ms],
    )


@pytest.mark.parametrize(
    ("measured", "reference", "band", "expected"),
    [(1.04, 1.0, INTERLEAVED_NOISE, True), (1.05, 1.0, 1.05, True), (1.06, 1.0, 1.05, False)],
)
def test_no_wider_holds_within_the_band_only(
    measured: float, reference: float, band: float, expected: bool
) -> None:
    assert no_wider(measured, reference, band) is expected


def test_no_wider_cannot_judge_a_missing_figure() -> None:
    assert no_wider(math.nan, 1.0, 1.05) is None
    assert no_wider(1.0, math.nan, 1.05) is None


def test_the_run_to_run_band_is_the_largest_repeat_over_the_median() -> None:
    assert run_to_run_band([10.0, 12.0, 15.0], 1.05) == pytest.approx(1.25)
    assert run_to_run_band([10.0, 10.1, 10.2], 1.05) == 1.05  # never narrower than the floor
    assert run_to_run_band([10.0, math.nan], 1.05) == 1.05  # one figure says nothing of the noise


def test_the_seed_spread_target_is_met_within_the_sides_own_noise() -> None:
    """15.5 against 13.4 ms in one run (what flipped the old target): Locust's own repeats lie
    as far apart, so the engine's pooled median within that band is no wider."""
    engine = [run_with([15.5, 15.5]), run_with([15.0]), run_with([15.2])]
    locust = [run_with([13.4]), run_with([13.0]), run_with([17.0])]
    check = server_spread_check(engine, locust)
    assert check.met is True
    assert "15.35 ms <= Locust-with-barrier 13.40 ms within the noise band 1.27 x" in check.line()
    assert check.line().endswith(": MET")


def test_the_seed_spread_target_is_missed_beyond_the_noise() -> None:
    engine = [run_with([30.0]), run_with([31.0]), run_with([29.0])]
    locust = [run_with([13.4]), run_with([14.0]), run_with([13.8])]
    check = server_spread_check(engine, locust)
    assert check.met is False
    assert check.line().endswith(": NOT MET")


def test_the_seed_spread_target_is_not_evaluated_without_stamps() -> None:
    stamped = [run_with([10.0])]
    unstamped = [Run("hey", 1.0, 1, Counter(), 0, [], {}, None)]
    assert server_spread_check(stamped, unstamped).met is None


@pytest.mark.parametrize(
    ("mets", "status"),
    [
        ((True, True), cli.EXIT_OK),
        ((True, None), cli.EXIT_INCOMPLETE),
        ((None, False), cli.EXIT_BELOW_TARGET),
    ],
)
def test_a_missed_target_outranks_one_not_evaluated(mets: tuple[bool | None, ...], status: int) -> None:
    assert exit_status([Check(f"c{i}", met) for i, met in enumerate(mets)]) == status


def test_the_shared_argument_types_refuse_what_they_should() -> None:
    assert cli.float_list("1,0.1") == [1.0, 0.1]
    assert cli.int_list("20, 50") == [20, 50]
    assert cli.subset(("h2c", "tls"))("tls") == ["tls"]
    assert cli.non_negative_int("0") == 0
    for parse, text in [
        (cli.float_list, "1,x"),
        (cli.float_list, ","),
        (cli.int_list, "0"),
        (cli.subset(("h2c", "tls")), "h3"),
        (cli.non_negative_int, "-1"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_smoke_replaces_the_sizes_only_under_smoke() -> None:
    args = argparse.Namespace(smoke=False, clients=100)
    cli.apply_smoke(args, clients=5)
    assert args.clients == 100
    args.smoke = True
    cli.apply_smoke(args, clients=5)
    assert args.clients == 5
