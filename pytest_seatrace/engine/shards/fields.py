"""The request as shards get it, worked out by the coordinator: user callables never travel.

The request's constant fields go once (in the ``Plan``); its varying fields (``json=``, ``url=``
callables, set-up cookies, a ``method=`` callable) are evaluated here per client, wave by wave,
into tables a shard looks its clients' values up in. The values are kept for the round, so a
predicate's ``response.request`` and each record's operation are rebuilt here as in one process.
With a model, each operation is checked and each update's input taken here as the tables are
made, before their wave goes out (``core.bindings``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import httpx

from pytest_seatrace.engine.plan import REQUEST_FIELDS, Attempt, Roster
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.shards.travel import HTTPX_FIELDS, plain

Tables = dict[str, list[list[Any]]]
"""Field name → ``[resource index, client, value]`` rows of one shard's clients of one wave."""


class RequestTables:
    def __init__(self, builder: RequestBuilder, roster: Roster) -> None:
        self.builder = builder
        self.spec = spec = builder.spec
        self.roster = roster
        names = ("method", *REQUEST_FIELDS)  # the method may vary too: a race of mixed operations
        self.varying = [name for name in names if callable(getattr(spec, name))]
        self.constants = {
            name: plain(getattr(spec, name))
            for name in REQUEST_FIELDS
            if name not in self.varying and getattr(spec, name) is not None
        }
        self.method: str | None = None if spec.method_varies else spec.method
        """The method, unless it varies (then it is among ``varying``)."""
        self._urls: dict[tuple[str, str, str], httpx.Request] = {}
        """(method, URL, params) as evaluated → a request with that URL (operations, inputs)."""
        self._inputs: dict[tuple[int, int, int], Hashable] = {}
        """(round, resource index, client) → what the race's model took from its request."""
        self._values: dict[tuple[int, int, int], dict[str, Any]] = {}
        """(round, resource index, client) → the varying fields evaluated for it."""
        self._one_operation: str | None = None
        """The operation of every record, when neither method nor URL nor query varies."""

    def new_round(self) -> None:
        self._values.clear()
        self._inputs.clear()

    def tables(self, rnd: int, share: dict[int, list[int]], indices: Sequence[int]) -> Tables:
        """The varying fields of one shard's clients of one wave, evaluated here."""
        tables: Tables = {name: [] for name in self.varying}
        columns = [(name, tables[name].append, name in HTTPX_FIELDS) for name in self.varying]
        kept, attempt_of, value = self._values, self.roster.attempt, self._value
        for index in indices:
            for client in share.get(index, ()):
                attempt = attempt_of(index, client, rnd)
                values = kept[(rnd, index, client)] = {}
                for name, append, httpx_container in columns:
                    got = value(name, attempt)
                    values[name] = got = plain(got) if httpx_container else got
                    append([index, client, got])
                if self.builder.bindings is not None:  # a model: checked before the wave goes out
                    self._take(rnd, index, client, attempt)
        return tables

    def _take(self, rnd: int, index: int, client: int, attempt: Attempt) -> None:
        """Name the client's operation (a usage error when the model covers none) and keep the
        input the model takes from its request."""
        operation = self.operation(rnd, index, client)
        if self.builder.takes_inputs:
            values = self._values[(rnd, index, client)]
            request = self._request(rnd, index, client)
            self._inputs[(rnd, index, client)] = self.builder.input_of(operation, request, values, attempt)

    def input(self, rnd: int, index: int, client: int) -> Hashable:
        """What the race's model took from the client's request (``None`` without a model)."""
        return self._inputs.get((rnd, index, client))

    def _value(self, name: str, attempt: Attempt) -> Any:
        return self.spec.method_of(attempt) if name == "method" else self.spec.value(name, attempt)

    def check_first(self, rnd: int, share: dict[int, list[int]]) -> None:
        """Build one request here: a bad URL is a usage error at once, and ``first_url`` is known."""
        if self.builder.first_url is None:
            for index, clients in share.items():
                if clients:
                    self.builder.build_from(self._args(rnd, index, clients[0]))
                    return

    def operation(self, rnd: int, index: int, client: int) -> str:
        """The record's operation (``core.operations``), named here as in one process; the request
        target is worked out once per distinct method, URL and query."""
        if self._one_operation is not None:
            return self._one_operation
        values = self._values.get((rnd, index, client), {})
        method = str(values.get("method", self.spec.method))
        target = self._request(rnd, index, client).url.raw_path.decode("ascii")
        if not self.builder.operations.templated:  # one name per (method, target): no attempt needed
            name = self.builder.operation(method, target, None)  # type: ignore[arg-type]
            if not {"method", "url", "params"} & set(self.varying):
                self._one_operation = name  # a constant target: every record's operation
            return name
        return self.builder.operation(method, target, self.roster.attempt(index, client, rnd))

    def _request(self, rnd: int, index: int, client: int) -> httpx.Request:
        """A request with the client's method and URL, built once per distinct method, URL and query."""
        values = self._values.get((rnd, index, client), {})
        key = (
            str(values.get("method", self.spec.method)),
            repr(values.get("url")),
            repr(values.get("params")),
        )
        request = self._urls.get(key)
        if request is None:
            request = self._urls[key] = self.builder.build_from(self._args(rnd, index, client))
        return request

    def response(
        self,
        rnd: int,
        index: int,
        client: int,
        status: int,
        headers: list[tuple[bytes, bytes]] | None,
        body: bytes | None,
    ) -> httpx.Response:
        """A shard's answer as the ``httpx.Response`` a predicate gets, with its request."""
        request = self.builder.build_from(self._args(rnd, index, client))
        return httpx.Response(status, headers=headers or [], content=body or b"", request=request)

    def _args(self, rnd: int, index: int, client: int) -> dict[str, Any]:
        args = {"method": self.spec.method, **self.constants, **self._values.get((rnd, index, client), {})}
        return {name: value for name, value in args.items() if value is not None}
