"""Classification of one response, in the design's order: success, reject, 5xx, the rest.

Timeouts (unknown) and transport failures (error) are decided by the firing code before a
response exists; this module sees only complete responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from pytest_seatrace.engine.plan import RaceConfig, Rule
from pytest_seatrace.results import Outcome


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str | None = None
    fatal: bool = False


class Classifier:
    """Applies a race's ``success`` and ``reject`` rules; predicates get an ``httpx.Response``."""

    def __init__(self, config: RaceConfig) -> None:
        self.success = config.success
        self.reject = config.reject
        self.success_given = config.success_given

    @property
    def needs_response(self) -> bool:
        """Whether a predicate needs the body: only then does last-byte mode keep it."""
        return self.success.needs_response or self.reject.needs_response

    def classify(self, status: int, response: Callable[[], httpx.Response] | httpx.Response) -> Verdict:
        try:
            if _matches(self.success, status, response):
                return Verdict(Outcome.WIN)
            if _matches(self.reject, status, response):
                return Verdict(Outcome.REJECTION)
        except Exception as exc:  # a user predicate: any failure is reported, never raised here
            return Verdict(Outcome.ERROR, f"predicate raised {type(exc).__name__}: {exc}", fatal=True)
        if status >= 500:
            return Verdict(Outcome.ERROR, f"HTTP {status}")
        if self.success_given:
            return Verdict(Outcome.REJECTION)
        return Verdict(Outcome.ERROR, f"unexpected {status}")


def _matches(rule: Rule, status: int, response: Callable[[], httpx.Response] | httpx.Response) -> bool:
    if rule.predicate is not None:
        resp = response if isinstance(response, httpx.Response) else response()
        return bool(rule.predicate(resp))
    return rule.statuses is not None and status in rule.statuses
