"""Report files as a session writes them: ``--race-json``/``--race-html`` to symlinks, FIFOs and
devices, checked before any test runs, and a session that fails when a report is lost at the end.

Inner sessions run in process (pytester): the probe at start-up, the write at the end and the
exit status are the ones a user's run makes. FIFO readers are opened by this test before the
inner session starts and drained in a thread with a deadline; nothing waits on a sleep.
"""

from __future__ import annotations

import json
import os
import select
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

DEADLINE = 30.0  # seconds a reader waits for the whole report


RACE = """
import pytest

@pytest.mark.race(resources=4, concurrency=200)
def test_seats(seats):
    seats.post(lambda a: f"/seat/{a.resource}")
"""
REQUESTS = 800


def run(inner: pytest.Pytester, *args: str, tests: str = RACE) -> pytest.RunResult:
    inner.makepyfile(test_races=tests)
    return inner.runpytest("-p", "no:cacheprovider", *args)


def assert_report(text: str) -> None:
    document = json.loads(text)
    assert document["schema"] == 1
    (race,) = document["races"]
    assert race["requests"] == REQUESTS
    assert race["passed"] is True
    assert race["history"] is not None


class FifoReader:
    """The read end of a FIFO, opened now (so a writer finds a reader) and drained in a thread
    until the writer closes it, for at most ``DEADLINE`` seconds."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self.closed_by_writer = False
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        deadline = time.monotonic() + DEADLINE
        # Before a writer has come, poll reports nothing (no POLLHUP), so a 0-byte read below
        # can only mean the writer has come and gone.
        while time.monotonic() < deadline:
            if not poller.poll(100):
                continue
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                self.closed_by_writer = True
                return
            self.data += chunk

    def text(self) -> str:
        self.thread.join(DEADLINE + 5)
        assert not self.thread.is_alive(), "the FIFO reader is still waiting"
        assert self.closed_by_writer, "the writer never closed the FIFO"
        return self.data.decode("utf-8")

    def close(self) -> None:
        self.thread.join(DEADLINE + 5)
        os.close(self.fd)


@pytest.fixture
def reader(fifo: Path) -> Iterator[FifoReader]:
    r = FifoReader(fifo)
    yield r
    r.close()


# -- written safely ----------------------------------------------------------------------------


def test_symlink_stays_a_symlink_and_its_target_is_written(inner: pytest.Pytester, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    target = artifacts / "races.json"
    target.write_text("old report", encoding="utf-8")
    link = inner.path / "r.json"
    link.symlink_to(target)
    result = run(inner, "--race-json", "r.json")
    assert result.ret == 0, result.stdout.str()
    assert link.is_symlink()
    assert link.readlink() == target
    assert_report(target.read_text(encoding="utf-8"))
    assert sorted(p.name for p in artifacts.iterdir()) == ["races.json"]  # no temporary left
    result.stdout.fnmatch_lines(["seatrace: report written to r.json"])


def test_dangling_symlink_gets_its_target_created(inner: pytest.Pytester, tmp_path: Path) -> None:
    target = tmp_path / "new.html"
    link = inner.path / "r.html"
    link.symlink_to(target)
    result = run(inner, "--race-html", "r.html")
    assert result.ret == 0, result.stdout.str()
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_fifo_with_a_reader_gets_the_whole_report(
    inner: pytest.Pytester, fifo: Path, reader: FifoReader
) -> None:
    result = run(inner, f"--race-json={fifo}")
    assert result.ret == 0, result.stdout.str()
    text = reader.text()
    assert len(text) > 1 << 16  # more than a pipe holds: the writer waited for the reader
    assert_report(text)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # never replaced by a file


def test_private_null_device_stays_a_device(inner: pytest.Pytester, tmp_path: Path) -> None:
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError as exc:
        pytest.skip(f"cannot make device nodes here: {exc}")
    try:
        os.close(os.open(node, os.O_WRONLY | os.O_NONBLOCK))
    except PermissionError as exc:
        pytest.skip(f"device nodes cannot be opened here (nodev mount): {exc}")
    result = run(inner, f"--race-json={node}", f"--race-html={node}")
    assert result.ret == 0, result.stdout.str()
    assert stat.S_ISCHR(node.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


# -- refused before any test runs ------------------------------------------------------------


def test_proc_path_is_a_usage_error_naming_the_option(inner: pytest.Pytester) -> None:
    result = run(inner, "--race-json", "/proc/x.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--race-json /proc/x.json: cannot create a file in /proc*"])
    assert "test_seats" not in result.stdout.str()
    assert not Path("/proc/x.json").exists()


def test_fifo_without_a_reader_is_a_usage_error(inner: pytest.Pytester, fifo: Path) -> None:
    result = run(inner, f"--race-html={fifo}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--race-html {fifo}: FIFO has no reader*"])
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_second_report_refused_releases_the_first(inner: pytest.Pytester, fifo: Path) -> None:
    """A FIFO probed for --race-json is let go when --race-html is refused: its reader sees the
    end of the file, not a writer that never comes."""
    r = FifoReader(fifo)
    try:
        result = run(inner, f"--race-json={fifo}", "--race-html=/proc/x.html")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--race-html /proc/x.html:*"])
        assert r.text() == ""
    finally:
        r.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_directory_is_a_usage_error(inner: pytest.Pytester, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run(inner, f"--race-json={locked / 'r.json'}")
    finally:
        locked.chmod(0o700)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--race-json {locked / 'r.json'}: cannot create a file in {locked}*"])


# -- lost at the end: the session fails ------------------------------------------------------

VANISHING = """
import shutil
import pytest

@pytest.mark.race(resources=2, concurrency=5)
def test_seats_then_lose_the_directory(seats):
    seats.post(lambda a: f"/seat/{{a.resource}}")
    shutil.rmtree({directory!r})
"""


@pytest.mark.parametrize("flag", ["--race-json", "--race-html"])
def test_report_lost_at_the_end_fails_the_session_and_names_the_file(
    inner: pytest.Pytester, tmp_path: Path, flag: str
) -> None:
    directory = tmp_path / "out"
    directory.mkdir()
    path = directory / "report"
    result = run(inner, f"{flag}={path}", tests=VANISHING.format(directory=str(directory)))
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"seatrace: could not write {flag} {path}: directory {directory} does not exist (the session fails)"]
    )
    assert "report written" not in result.stdout.str()


def test_one_lost_report_does_not_stop_the_other(inner: pytest.Pytester, tmp_path: Path) -> None:
    directory = tmp_path / "out"
    directory.mkdir()
    kept = inner.path / "kept.json"
    result = run(
        inner,
        f"--race-json={kept}",
        f"--race-html={directory / 'r.html'}",
        tests=VANISHING.format(directory=str(directory)),
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"seatrace: report written to {kept}", "seatrace: could not write --race-html*"]
    )
    assert json.loads(kept.read_text(encoding="utf-8"))["races"][0]["requests"] == 10


def test_failing_tests_keep_their_exit_status(inner: pytest.Pytester, tmp_path: Path) -> None:
    directory = tmp_path / "out"
    directory.mkdir()
    tests = VANISHING.format(directory=str(directory)) + "\n\ndef test_fails():\n    assert False\n"
    result = run(inner, f"--race-json={directory / 'r.json'}", tests=tests)
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["seatrace: could not write --race-json*"])
