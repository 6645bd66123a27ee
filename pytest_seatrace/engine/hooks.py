"""A callable of the test failed mid-race: name it, point at the test's own line, trim the engine.

A ``reset=``, a ``verify=`` or a request argument callable that raises after requests went out
ends the race with what it has (``runner.run_race``); the error the user sees names the hook,
where it stopped and the line of their code that raised (``at conftest.py:88``), and its
traceback starts in their code, not in the engine or anyio that called it.
"""

from __future__ import annotations

import sysconfig
from functools import cache
from pathlib import Path
from types import TracebackType

from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.redact import redact_text

MAX_MESSAGE = 200
"""Characters of an exception's first line kept in a reason."""


@cache
def _library_dirs() -> tuple[str, ...]:
    """Where code that is not the test's own lives: this package, the standard library and the
    installed packages (httpx, anyio)."""
    paths = sysconfig.get_paths()
    dirs = {str(Path(__file__).resolve().parents[1])}
    dirs.update(str(Path(paths[key]).resolve()) for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(sorted(dirs))


def is_user_frame(tb: TracebackType) -> bool:
    """The frame runs the test's own code (its test file, conftest or helpers)."""
    filename = tb.tb_frame.f_code.co_filename
    if filename.startswith("<"):  # <frozen runpy>, <string>: nobody's line to point at
        return False
    try:
        path = str(Path(filename).resolve())
    except OSError:
        return False
    return not path.startswith(_library_dirs())


def user_error(exc: BaseException) -> BaseException:
    """The test's own exception behind ``exc``: a request callable's exception is wrapped in a
    ``RaceUsageError`` naming the argument (``RequestSpec.value``); unwrap it."""
    if isinstance(exc, RaceUsageError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def location(exc: BaseException) -> str:
    """`` at conftest.py:88``: the innermost line of the test's own code in ``exc``'s traceback
    (empty when none is the test's, e.g. an error the engine found in a returned value)."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        if is_user_frame(tb):
            found = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def trim(exc: BaseException) -> BaseException:
    """``exc`` with its traceback starting at the test's own first frame, so pytest shows the
    user's frames, not the engine's (left whole when no frame is the test's)."""
    tb = exc.__traceback__
    while tb is not None and not is_user_frame(tb):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    return exc


def describe(exc: BaseException) -> str:
    """``HTTPStatusError: Client error '400 Bad Request' for url …``: type and first line, short,
    the message redacted (the type name is not a secret, ``KeyError: 2`` stays)."""
    return f"{type(exc).__name__}: {_message(exc)}".rstrip(": ")


def _message(exc: BaseException) -> str:
    """``exc``'s first line, short and redacted."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > MAX_MESSAGE:
        first = first[: MAX_MESSAGE - 1] + "…"
    return redact_text(first)


def explain(exc: BaseException) -> str:
    """What went wrong and where: ``HTTPStatusError: … at conftest.py:88``; a request argument's
    usage error as it reads (it names the argument and the attempt), with the test's line."""
    error = user_error(exc)
    if error is exc:
        return f"{describe(exc)}{location(exc)}"
    text = str(exc).replace(str(error), _message(error))  # the wrapper names the argument
    return f"{text}{location(error)}"
