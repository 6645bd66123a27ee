"""Sharded races: one race's clients over several execnet gateways, with one start per wave.

execnet is the engine under pytest-xdist. The roles, each in its module:

- ``gateways``: the session's gateway pool (a gateway per spec, started on first use, reused);
- ``coordinator``: ``ShardedFirer``, the firer the runner drives, whose waves run on the shards;
- ``link``: one shard as the coordinator sees it (its channel, its clock map, how it ended);
- ``clock``: a shard's clocks mapped onto the coordinator's, with an error bound;
- ``messages``: the named messages both sides exchange, and their encoding;
- ``travel``: what of a race crosses a channel (plain data only) and how;
- ``fields``: the request's varying fields, evaluated by the coordinator per client;
- ``remote``, ``worker``, ``starter``: the far side (bootstrap, the race, the wait for a start).
"""

from __future__ import annotations

from pytest_seatrace.engine.shards.coordinator import ShardedFirer
from pytest_seatrace.engine.shards.gateways import GatewayPool, Gateways

__all__ = ["GatewayPool", "Gateways", "ShardedFirer"]
