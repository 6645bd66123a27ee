"""Print the recipes' start spreads from ``--race-json`` reports: the figures in docs/recipes.md.

    for i in 1 2 3; do pytest examples/recipes -p no:xdist --race-json recipes-$i.json; done
    uptime
    python -m examples.recipes.spreads recipes-*.json

Per race (test name), over the reports given: the median across runs of the race's median
per-resource client start spread (``result.spread.median_ns``, first to last final write of a
resource's clients), its range, the server-side median from the apps' ``X-Arrival-Ns`` stamps,
and the median latency. Run the reports one after another, with nothing else on the machine:
a spread measured beside another test run measures that run.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def rows(reports: Sequence[Path]) -> list[tuple[str, int, float, float, float, float | None, float]]:
    """(race, runs, median, min, max client spread in ms, server spread ms, p50 latency ms)."""
    by_race: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in reports:
        for race in json.loads(path.read_text(encoding="utf-8"))["races"]:
            by_race[race["name"]].append(race)
    out = []
    for name, races in by_race.items():
        client = [r["spread"]["median_ns"] / 1e6 for r in races if r["spread"]["median_ns"] is not None]
        server = [r["spread"]["server_median_ns"] / 1e6 for r in races if r["spread"]["server_median_ns"]]
        latency = [r["latency"]["all"]["med_ns"] / 1e6 for r in races]
        if not client:
            continue
        out.append(
            (
                name.split("::")[-1] + f" [{races[0]['mode']}]",
                len(races),
                statistics.median(client),
                min(client),
                max(client),
                statistics.median(server) if server else None,
                statistics.median(latency),
            )
        )
    return out


def main(argv: Sequence[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__ or "")
        return 2
    table = rows([Path(arg) for arg in argv])
    width = max(len(row[0]) for row in table)
    sys.stdout.write(f"{'race':<{width}}  runs  client spread ms (min-max)  server ms  p50 ms\n")
    for name, runs, median, low, high, server, p50 in table:
        served = "-" if server is None else f"{server:.2f}"
        span = f"{median:.2f} ({low:.2f}-{high:.2f})"
        sys.stdout.write(f"{name:<{width}}  {runs:>4}  {span:>26}  {served:>9}  {p50:>6.1f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
