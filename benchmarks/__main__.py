"""``python -m benchmarks NAME [options]``: run one benchmark; without a name, list them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS = {
    "seed_scenario": "the seed race (100 clients x 16 seats) by the engine, Locust, hey and naive httpx",
    "start_spread": "how tightly a seat's clients start, against a bare send loop and a tight-loop racer",
    "detection": "how often the seed race catches the unsafe service's double booking, per window",
    "throughput": "keep-alive POST throughput and client CPU per request against hey",
    "scale": "10k, 25k and 50k requests: peak memory and time per request",
    "shards": "one race over 1 and 2 execnet shards: wall, spreads, clock error",
    "single_packet": "HTTP/2 single-packet against last-byte: gate write, spreads, catch rate, via nginx",
}
"""Every benchmark module and its one-line purpose (docs/benchmarks.md has one section each)."""

USAGE = "usage: python -m benchmarks NAME [--smoke] [options]   (NAME --help lists its options)"


def listing() -> str:
    width = max(map(len, BENCHMARKS))
    lines = [USAGE, "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {purpose}" for name, purpose in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(listing())
        return 0
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"no benchmark {name!r}\n\n{listing()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    status: int = module.main(rest)
    return status


if __name__ == "__main__":
    sys.exit(main())
