"""A race's history as the Jepsen EDN file of ``--race-history``: one map per line, what Knossos
and Elle read and ``python -m pytest_seatrace.history check`` checks.

``:time`` counts nanoseconds from the race's first call, as Jepsen's clock counts from the test's
start. ``:key`` is the resource; in a race of several rounds it is ``[round resource]``, since
each round starts from a reset state and must be checked apart, as the race checks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

from pytest_seatrace.core.histories import operations
from pytest_seatrace.core.records import Record, ShardInfo
from pytest_seatrace.history.jepsen import write_edn
from pytest_seatrace.history.model import Model


def history_edn(
    records: Sequence[Record],
    model: Model,
    resources: Sequence[Hashable],
    shards: Sequence[ShardInfo] = (),
) -> str:
    """The race's operations as Jepsen writes them: an ``:invoke`` line and a completion line each,
    ``:f`` the model's function, ``:op`` the raced operation; empty when nothing was sent."""
    ops = operations(records, model, resources, shards)
    if not ops:
        return ""
    start = min(op.call for op in ops)
    rounds = any(rec.round > 1 for rec in records)
    return write_edn(
        dataclasses.replace(
            op,
            call=(op.call - start) / 1e9,
            ret=(op.ret - start) / 1e9,  # +inf stays +inf: an info never returns
            key=(records[op.process].round, op.key) if rounds else op.key,
        )
        for op in ops
    )
