"""Verdicts we did not write: Porcupine's test data (MIT, see data/porcupine/README.md), 102 Jepsen etcd
histories checked against a compare-and-set register and six key-value histories of 1, 10 and 50
clients, each with the verdict Porcupine's own tests hold. Unknown counts as wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_seatrace.history import check, read_edn, read_jepsen_log
from pytest_seatrace.models import CasRegister, KeyValue

DATA = Path(__file__).parent / "data" / "porcupine"


def known_verdicts() -> list[tuple[str, bool]]:
    lines = (DATA / "verdicts.txt").read_text().splitlines()
    return [
        (name, verdict == "linearizable")
        for name, verdict in (line.split() for line in lines if line[:1] != "#")
    ]


VERDICTS = known_verdicts()


def test_the_data_is_complete() -> None:
    assert sum(name.startswith("jepsen/") for name, _ in VERDICTS) == 102
    assert sorted(name for name, _ in VERDICTS if name.startswith("kv/")) == [
        f"kv/c{n}-{v}.txt" for n in ("01", "10", "50") for v in ("bad", "ok")
    ]
    assert {True, False} == {linearizable for _, linearizable in VERDICTS}
    assert (DATA / "LICENSE.md").read_text().startswith("The MIT License")


@pytest.mark.parametrize(("name", "linearizable"), VERDICTS, ids=[name for name, _ in VERDICTS])
def test_porcupine_verdict(name: str, linearizable: bool) -> None:
    text = (DATA / name).read_text()
    if name.startswith("jepsen/"):
        verdict = check(read_jepsen_log(text), CasRegister(), timeout=30)
    else:
        verdict = check(read_edn(text), KeyValue(), timeout=30)
    assert verdict.valid is linearizable, verdict.explanation()
