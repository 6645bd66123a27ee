"""From a complete response to a record, in two steps: what came off the wire, then its outcome.

A firer hands each complete response to a ``ResponseRecorder``. ``record_response`` writes down
the wire facts (status, the service's arrival stamp); ``Classifier`` then decides the outcome
with the race's rules, in the design's order: error, success, reject, 5xx, the rest. A shard
only records (its records are classified on the coordinator, which has the rules). Timeouts
(unknown) and transport failures (error) are decided by the firing code before a response
exists; this module sees only complete responses.

With a model (``core.bindings``), a winning read's output is taken from its response here, and a
``race.run`` attempt, whose request the engine never built, is named from its request as it goes
out (``sending``; else from the request its response answers), its input taken from it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from pytest_seatrace.core.bindings import BindingError, Bindings
from pytest_seatrace.core.config import RaceConfig, Rule
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.operations import OperationNamer
from pytest_seatrace.core.reasons import Reasons
from pytest_seatrace.core.records import BODY_KEEP, Outcome, Record
from pytest_seatrace.engine.plan import Attempt

ARRIVAL_HEADER = "x-arrival-ns"
"""The service's own arrival stamp (``time.perf_counter_ns`` when the body was read), if any."""

ResponseSource = Callable[[], httpx.Response] | httpx.Response
"""A response, or how to build one: last-byte mode builds it only when a predicate asks."""


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    reason: str | None = None
    fatal: bool = False
    by_rule: bool = False
    """Decided by a ``success=``/``reject=``/``error=`` the test gave, not by a built-in default."""


def record_response(rec: Record, status: int, arrival: bytes | str | None) -> None:
    """The wire facts of a complete response: its status and the service's arrival stamp."""
    rec.status = status
    rec.server_ns = int(arrival) if arrival and arrival.isdigit() else 0


class ResponseRecorder(ABC):
    """Where a firer writes down each complete response: the wire facts (``record_response``),
    the same for every recorder, then what this recorder keeps of it (``keep``)."""

    @property
    @abstractmethod
    def needs_response(self) -> bool:
        """Whether the whole response (headers, all of the body) must be kept for a predicate."""

    def fill(
        self,
        rec: Record,
        status: int,
        arrival: bytes | str | None,
        body: bytes | None,
        response: ResponseSource,
    ) -> None:
        """Write a complete response into its record, then ``keep`` it."""
        record_response(rec, status, arrival)
        self.keep(rec, body, response)

    def sending(self, rec: Record, request: httpx.Request) -> None:
        """A ``race.run`` attempt's raced request, as it goes out (a model names it: ``Classifier``)."""
        return None

    @abstractmethod
    def keep(self, rec: Record, body: bytes | None, response: ResponseSource) -> None:
        """After the wire facts: the outcome (``Classifier``), or the answer a shard sends to
        the coordinator, which has the rules."""


class Classifier(ResponseRecorder):
    """Records each response, then applies a race's ``error``, ``success`` and ``reject`` rules;
    predicates get an ``httpx.Response``; so does a model's read function (``bindings``)."""

    def __init__(self, config: RaceConfig, bindings: Bindings | None = None) -> None:
        self.resources = config.resources
        self.bindings = bindings if bindings is not None and bindings.active else None
        """The race's model, when it has anything to take from responses or to name."""
        self._attempts = OperationNamer(templated=True)
        """Names ``race.run`` attempts' operations from their requests (model races only)."""
        self.success = config.success
        self.reject = config.reject
        self.error = config.error
        self.success_given = config.success_given
        self.reject_given = config.reject_given
        self.reasons = Reasons()
        """What non-winning responses said, and which of them keep their body as samples."""
        predicates = self.success.needs_response or self.reject.needs_response or self.error.needs_response
        self._by_status: dict[int, Classification] | None = None if predicates else {}
        """Rules on statuses alone decide by the status: each verdict worked out once."""
        self._needs_response = predicates or (self.bindings is not None and self.bindings.reads)

    @property
    def needs_response(self) -> bool:
        """Whether a predicate or the model's read needs the body: only then does last-byte
        mode keep it."""
        return self._needs_response

    def classify(self, status: int, response: ResponseSource) -> Classification:
        known = self._by_status
        if known is not None:
            verdict = known.get(status)
            if verdict is None:
                verdict = known[status] = self._classify(status, response)
            return verdict
        return self._classify(status, response)

    def _classify(self, status: int, response: ResponseSource) -> Classification:
        built: list[httpx.Response] = []

        def get() -> httpx.Response:  # built at most once, and only for a predicate
            if isinstance(response, httpx.Response):
                return response
            if not built:
                built.append(response())
            return built[0]

        try:
            if _matches(self.error, status, get):  # a failure whatever else it looks like
                return Classification(Outcome.ERROR, f"error= matched {status}", by_rule=True)
            if _matches(self.success, status, get):
                return Classification(Outcome.WIN, by_rule=self.success_given)
            if _matches(self.reject, status, get):
                return Classification(Outcome.REJECTION, by_rule=self.reject_given)
        except Exception as exc:  # a user predicate: any failure is reported, never raised here
            return Classification(Outcome.ERROR, f"predicate raised {type(exc).__name__}: {exc}", fatal=True)
        if status >= 500:
            return Classification(Outcome.ERROR, f"HTTP {status}")
        if self.reject_given:  # the test said what a loss is: anything else is not one
            return Classification(Outcome.ERROR, f"unclassified: {status}")
        if self.success_given:  # whatever is no win by the test's own rule is a loss
            return Classification(Outcome.REJECTION, by_rule=True)
        return Classification(Outcome.ERROR, f"unexpected {status}")

    def keep(self, rec: Record, body: bytes | None, response: ResponseSource) -> None:
        self.decide(rec, body, response)

    def decide(self, rec: Record, body: bytes | None, response: ResponseSource) -> None:
        """The outcome of a recorded response, and the first KiB of a winner's body; for the
        rest, what the body said (``core.reasons``) and, for a few of each kind, the body's
        first KiB as a sample for reports."""
        status = rec.status
        verdict = self.classify(status, response)
        if self.bindings is not None:
            verdict = self._modelled(rec, verdict, response)
        rec.outcome, rec.reason, rec.fatal = verdict.outcome, verdict.reason, verdict.fatal
        rec.by_rule = verdict.by_rule
        start = (body or b"")[:BODY_KEEP]
        if rec.outcome is Outcome.WIN:
            rec.body = start
            return
        reasons = self.reasons
        rec.said = said = reasons.said(status, start)
        rec.reason = reasons.explain(rec.reason, status, said)
        if reasons.keep(rec.resource, status, said):
            rec.body = start

    def sending(self, rec: Record, request: httpx.Request) -> None:
        """Name a ``race.run`` attempt's operation and take its input as its request goes out,
        so a request that gets no answer is named too; one the model cannot take is not sent:
        the attempt raises (a fatal record) and the record is no operation of the history."""
        if self.bindings is None or rec.operation:
            return
        problem = self._attempt(rec, request)
        if problem is not None:
            rec.call_ns = 0
            raise RaceUsageError(problem)

    def _modelled(self, rec: Record, verdict: Classification, response: ResponseSource) -> Classification:
        """What the model takes from a response: a ``race.run`` attempt's operation and input,
        a winning read's output. A read function that raises, or an attempt the model cannot
        take, makes the record fatal, as a predicate that raised does."""
        assert self.bindings is not None  # noqa: S101 - called only with a model
        if not rec.operation and isinstance(response, httpx.Response):
            try:
                request = response.request
            except RuntimeError:  # an attempt's own httpx.Response, made without a request
                return Classification(Outcome.ERROR, "the response has no request to name", fatal=True)
            problem = self._attempt(rec, request)
            if problem is not None:
                return Classification(Outcome.ERROR, problem, fatal=True)
        if verdict.outcome is not Outcome.WIN or not self.bindings.reads:
            return verdict
        rec.output, problem = self.bindings.output(rec.operation, lambda: _built(response))
        return verdict if problem is None else Classification(Outcome.ERROR, problem, fatal=True)

    def _attempt(self, rec: Record, request: httpx.Request) -> str | None:
        """Name a ``race.run`` attempt's operation from its request, and take its input from it
        (``json``: the body parsed when it is JSON); why the model cannot take it, or ``None``.
        An operation the model does not cover is no operation of the history (``call_ns`` 0)."""
        assert self.bindings is not None  # noqa: S101 - called only with a model
        who = Attempt(self.resources[rec.resource], rec.client, rec.round)
        target = request.url.raw_path.decode("ascii")
        rec.operation = self._attempts.name(request.method, target, who)
        if self.bindings.covering(rec.operation) is None:
            rec.call_ns = 0
            return self.bindings.uncovered(rec.operation)
        if not self.bindings.takes_inputs:
            return None
        fields = {
            "json": _json_of(request),
            "content": request.content,
            "headers": request.headers,
            "params": request.url.params,
        }
        try:
            rec.input = self.bindings.input(rec.operation, request.method, str(request.url), fields, who)
        except BindingError as exc:
            return str(exc)
        return None


def _built(response: ResponseSource) -> httpx.Response:
    return response() if callable(response) else response


def _json_of(request: httpx.Request) -> object:
    """A request's body parsed, when it says it is JSON; else ``None``."""
    if "json" not in request.headers.get("content-type", ""):
        return None
    try:
        return json.loads(request.content)
    except ValueError:
        return None


def _matches(rule: Rule, status: int, response: Callable[[], httpx.Response]) -> bool:
    if rule.predicate is not None:
        return bool(rule.predicate(response()))
    return rule.statuses is not None and status in rule.statuses
