"""``single_datagram``'s targets, judged on figures given here (no service): which one is NOT MET,
and why, decides the exit status."""

from __future__ import annotations

from benchmarks.judge import exit_status
from benchmarks.single_datagram import (
    STARTS,
    TARGET_WINDOW_MS,
    DatagramCell,
    make_parser,
    target_checks,
)


def _cells(paths: list[str]) -> dict[tuple[str, str], DatagramCell]:
    """Every start on every path; single-datagram's figures all within target."""
    cells = {(path, start): DatagramCell() for path in paths for start in STARTS}
    for path in paths:
        ours = cells[(path, "single-datagram")]
        ours.gate_ns += [20_000, 30_000]
        ours.datagrams += [1, 1]
        ours.bytes += [900, 911]
        ours.caught[TARGET_WINDOW_MS] = [True] * 100
    return cells


def _wide(datagrams: int) -> DatagramCell:
    wide = DatagramCell()
    wide.datagrams.append(datagrams)
    return wide


def test_figures_within_every_target_exit_zero() -> None:
    args = make_parser().parse_args([])
    checks = target_checks(_cells(args.paths), _wide(2), args)
    assert [check.met for check in checks] == [True] * 6
    assert exit_status(checks) == 0


def test_each_missed_target_is_named_with_its_figure() -> None:
    args = make_parser().parse_args([])
    cells = _cells(args.paths)
    cells[("loopback", "single-datagram")].datagrams.append(2)
    cells[("jittery", "single-datagram")].caught[TARGET_WINDOW_MS][:5] = [False] * 5
    cells[("jittery", "single-datagram")].gate_ns += [900_000] * 3
    cells[("loopback", "last-byte/body")].problems.append("loopback last-byte/body run 1: 3 errors")
    missed = [check.line() for check in target_checks(cells, _wide(3), args) if check.met is False]
    assert missed == [
        "target: 100 clients: one datagram per release of <= 1,200 bytes "
        "(max 2 datagram(s), 911 bytes): NOT MET",
        "target: 200 clients: <= 2 datagrams per release (max 3): NOT MET",
        "target: jittery: gate write median 900.0 µs <= 100 µs: NOT MET",
        "target: jittery: the 10 µs window caught on 95.0% of seats (>= 99%): NOT MET",
        "target: clean race: loopback last-byte/body run 1: 3 errors: NOT MET",
    ]


def test_a_run_at_other_sizes_leaves_the_datagram_targets_unevaluated() -> None:
    args = make_parser().parse_args(["--clients", "50", "--wide-clients", "300"])
    checks = target_checks(_cells(args.paths), _wide(3), args)
    assert [check.met for check in checks[:2]] == [None, None]
    assert exit_status(checks) == 2
