"""The safe report writer: regular files by write-and-rename, FIFOs and devices in place.

Devices are private nodes made with ``mknod`` under ``tmp_path`` (skipped where that is not
allowed); the real ``/dev`` is never written. FIFO readers are opened non-blocking before the write,
and nothing waits on a sleep: where a write must not hang, it runs in a thread that is joined with a
deadline.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_seatrace.report import safe_write
from pytest_seatrace.report.safe_write import SafeWriter, describe_target

OPTION = "--race-html"
TEXT = "<!doctype html><p>seats: 16 \N{EM DASH} sold once</p>\n"
HANG = 20.0  # seconds after which a write is taken to hang


@pytest.fixture
def writer() -> Iterator[SafeWriter]:
    """A writer of the test's own, as each session has one; what its probes kept open is closed
    after the test."""
    made = SafeWriter()
    yield made
    made.release()


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def run_bounded(fn: Callable[[], None], seconds: float = HANG) -> BaseException | None:
    """Run ``fn`` in a thread; fail if it has not returned within ``seconds``; return its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return errors[0] if errors else None


def drain(fd: int, size: int, seconds: float = HANG) -> bytes:
    """Read up to ``size`` bytes from the non-blocking ``fd``, polling, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    got = 0
    while got < size and time.monotonic() < deadline:
        if not poller.poll(50):
            continue
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def open_reader(fifo: Path) -> int:
    return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)


@pytest.fixture
def reader(fifo: Path) -> Iterator[int]:
    """The FIFO's read end, open (non-blocking) for the whole test."""
    fd = open_reader(fifo)
    yield fd
    os.close(fd)


def make_char_device(path: Path, major: int, minor: int) -> Path:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError as exc:
        pytest.skip(f"cannot make device nodes here: {exc}")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except PermissionError as exc:  # a filesystem mounted nodev
        pytest.skip(f"device nodes cannot be opened here: {exc}")
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- regular files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
def test_new_file_gets_text_and_umask_mode(tmp_path: Path, mask: int, mode: int, writer: SafeWriter) -> None:
    path = tmp_path / "r.html"
    with umask(mask):
        assert writer.probe(path, OPTION) is None
        writer.write_text(path, TEXT)
    assert path.read_text(encoding="utf-8") == TEXT
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert listing(tmp_path) == ["r.html"]


def test_existing_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path, writer: SafeWriter) -> None:
    path = tmp_path / "r.json"
    path.write_text("old report, much longer than the new one\n" * 100, encoding="utf-8")
    path.chmod(0o640)
    before = path.stat()
    writer.write_text(path, TEXT)
    after = path.stat()
    assert after.st_ino != before.st_ino  # a new file renamed into place, not rewritten
    assert path.read_text(encoding="utf-8") == TEXT
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert listing(tmp_path) == ["r.json"]


def test_failed_rename_leaves_the_old_report_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: SafeWriter
) -> None:
    path = tmp_path / "r.json"
    path.write_text("old", encoding="utf-8")

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(OSError, match=r"cannot replace .*r\.json \(Input/output error\)") as info:
        writer.write_text(path, TEXT)
    assert info.value.errno == errno.EIO
    assert path.read_text(encoding="utf-8") == "old"
    assert listing(tmp_path) == ["r.json"]


def test_probe_of_a_regular_path_leaves_nothing_behind(tmp_path: Path, writer: SafeWriter) -> None:
    existing = tmp_path / "old.html"
    existing.write_text("kept", encoding="utf-8")
    inode = existing.stat().st_ino
    assert writer.probe(tmp_path / "new.html", OPTION) is None
    assert writer.probe(existing, OPTION) is None
    assert listing(tmp_path) == ["old.html"]
    assert existing.stat().st_ino == inode
    assert existing.read_text(encoding="utf-8") == "kept"


def test_symlink_stays_a_symlink_and_its_target_gets_the_text(tmp_path: Path, writer: SafeWriter) -> None:
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "r.html"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "latest.html"
    link.symlink_to(Path("reports") / "r.html")
    assert writer.probe(link, OPTION) is None
    writer.write_text(link, TEXT)
    assert link.is_symlink()
    assert link.readlink() == Path("reports") / "r.html"
    assert target.read_text(encoding="utf-8") == TEXT
    assert listing(tmp_path) == ["latest.html", "reports"]  # the temporary file went beside the target
    assert listing(tmp_path / "reports") == ["r.html"]


def test_dangling_symlink_gets_its_target_written(tmp_path: Path, writer: SafeWriter) -> None:
    (tmp_path / "out").mkdir()
    link = tmp_path / "r.html"
    link.symlink_to(tmp_path / "out" / "new.html")
    assert writer.probe(link, OPTION) is None
    with umask(0o022):
        writer.write_text(link, TEXT)
    target = tmp_path / "out" / "new.html"
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == TEXT
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_dangling_symlink_into_a_missing_directory_is_an_error(tmp_path: Path, writer: SafeWriter) -> None:
    link = tmp_path / "r.html"
    link.symlink_to(tmp_path / "nowhere" / "new.html")
    message = writer.probe(link, OPTION)
    assert message == f"{OPTION} {link}: directory {tmp_path / 'nowhere'} does not exist"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        writer.write_text(link, TEXT)
    assert not (tmp_path / "nowhere").exists()
    assert link.is_symlink()


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: SafeWriter) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert writer.probe(Path("~/r.json"), "--race-json") is None
    writer.write_text(Path("~/r.json"), TEXT)
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == TEXT


# --- paths that cannot be written ---------------------------------------------------------------


def test_a_directory_at_the_path_is_an_error(tmp_path: Path, writer: SafeWriter) -> None:
    path = tmp_path / "r.html"
    path.mkdir()
    assert writer.probe(path, OPTION) == f"{OPTION} {path}: is a directory"
    with pytest.raises(IsADirectoryError):
        writer.write_text(path, TEXT)
    assert path.is_dir()
    assert listing(path) == []
    assert listing(tmp_path) == ["r.html"]


def test_a_missing_parent_directory_is_an_error_and_is_not_created(
    tmp_path: Path, writer: SafeWriter
) -> None:
    path = tmp_path / "no" / "such" / "r.html"
    message = writer.probe(path, OPTION)
    assert message is not None
    assert message.startswith(f"{OPTION} {path}: ")
    assert "does not exist" in message
    with pytest.raises(FileNotFoundError):
        writer.write_text(path, TEXT)
    assert listing(tmp_path) == []


def test_a_file_where_the_parent_directory_should_be_is_an_error(tmp_path: Path, writer: SafeWriter) -> None:
    (tmp_path / "plain").write_text("", encoding="utf-8")
    path = tmp_path / "plain" / "r.html"
    message = writer.probe(path, OPTION)
    assert message is not None
    assert "Not a directory" in message
    with pytest.raises(NotADirectoryError):
        writer.write_text(path, TEXT)


def test_a_read_only_directory_is_reported(tmp_path: Path, writer: SafeWriter) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        if os.geteuid() == 0 and os.access(directory, os.W_OK):
            # Root ignores permission bits, unless CAP_DAC_OVERRIDE has been dropped.
            pytest.skip("root ignores permission bits")
        message = writer.probe(directory / "r.html", OPTION)
        assert message == (
            f"{OPTION} {directory / 'r.html'}: cannot create a file in {directory} (Permission denied)"
        )
        with pytest.raises(PermissionError):
            writer.write_text(directory / "r.html", TEXT)
        assert listing(directory) == []
    finally:
        directory.chmod(0o755)


def test_an_immutable_directory_is_reported_even_to_root(tmp_path: Path, writer: SafeWriter) -> None:
    directory = tmp_path / "frozen"
    directory.mkdir()
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not available here: {done.stderr.decode(errors='replace').strip()}")
    try:
        message = writer.probe(directory / "r.html", OPTION)
        assert message is not None
        assert message.startswith(f"{OPTION} {directory / 'r.html'}: cannot create a file in {directory} (")
        with pytest.raises(OSError, match="cannot create a file in"):
            writer.write_text(directory / "r.html", TEXT)
        assert listing(directory) == []
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_a_proc_path_is_reported_and_nothing_is_created(writer: SafeWriter) -> None:
    path = Path("/proc/seatrace-test.html")
    message = writer.probe(path, OPTION)
    assert message is not None
    assert message.startswith(f"{OPTION} {path}: cannot create a file in /proc (")
    with pytest.raises(OSError, match="cannot create a file in /proc"):
        writer.write_text(path, TEXT)
    assert not path.exists()


def test_a_socket_is_reported(tmp_path: Path, writer: SafeWriter) -> None:
    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
    except OSError as exc:
        server.close()
        pytest.skip(f"cannot bind a unix socket here: {exc}")
    with server:
        message = writer.probe(path, OPTION)
        assert message is not None
        assert "socket" in message
        with pytest.raises(OSError, match="socket"):
            writer.write_text(path, TEXT)
        assert stat.S_ISSOCK(path.lstat().st_mode)


# --- FIFOs --------------------------------------------------------------------------------------


def test_a_fifo_with_a_reader_is_written_in_place(
    tmp_path: Path, fifo: Path, reader: int, writer: SafeWriter
) -> None:
    writer.write_text(fifo, TEXT)
    assert os.read(reader, 1 << 16) == TEXT.encode()
    assert os.read(reader, 1 << 16) == b""  # the writer closed: end of file
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert listing(tmp_path) == [fifo.name]


def test_the_start_up_probe_does_not_hand_the_reader_end_of_file(
    fifo: Path, reader: int, writer: SafeWriter
) -> None:
    assert writer.probe(fifo, OPTION) is None
    # The probe's write end is still open: nothing to read yet, but no end of file either.
    with pytest.raises(BlockingIOError):
        os.read(reader, 1 << 16)
    writer.write_text(fifo, TEXT)
    assert os.read(reader, 1 << 16) == TEXT.encode()
    assert os.read(reader, 1 << 16) == b""


def test_release_closes_a_write_end_kept_by_the_probe(fifo: Path, reader: int, writer: SafeWriter) -> None:
    assert writer.probe(fifo, OPTION) is None
    with pytest.raises(BlockingIOError):
        os.read(reader, 1)
    writer.release(fifo)
    assert os.read(reader, 1) == b""


def test_each_writer_keeps_its_own_write_ends(fifo: Path, reader: int, writer: SafeWriter) -> None:
    """Two sessions in one process (pytester runs them in-process) each hold what their own
    probe opened: one releasing its ends leaves the other's open, and the other's write still
    reaches the reader."""
    other = SafeWriter()
    try:
        assert writer.probe(fifo, OPTION) is None
        assert other.probe(fifo, OPTION) is None
        other.release()
        with pytest.raises(BlockingIOError):  # this writer's end is still open: no end of file
            os.read(reader, 1)
        writer.write_text(fifo, TEXT)
        assert os.read(reader, 1 << 16) == TEXT.encode()
        assert os.read(reader, 1 << 16) == b""
    finally:
        other.release()


def test_a_fifo_without_a_reader_is_reported_never_waited_on(tmp_path: Path, writer: SafeWriter) -> None:
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    message = writer.probe(fifo, OPTION)
    assert message == f"{OPTION} {fifo}: FIFO has no reader"
    started = time.monotonic()
    error = run_bounded(lambda: writer.write_text(fifo, TEXT))
    assert isinstance(error, OSError)
    assert error.errno == errno.ENXIO
    assert error.strerror == "FIFO has no reader"
    assert time.monotonic() - started < safe_write.WRITE_TIMEOUT
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_reader_that_drains_concurrently_gets_a_report_larger_than_the_pipe(
    tmp_path: Path, writer: SafeWriter
) -> None:
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    payload = "".join(f"{i:07d}\n" for i in range(128 * 1024))  # 1 MiB, many pipe buffers
    reader = open_reader(fifo)
    received: list[bytes] = []
    try:
        thread = threading.Thread(target=lambda: received.append(drain(reader, len(payload))), daemon=True)
        thread.start()
        assert run_bounded(lambda: writer.write_text(fifo, payload)) is None
        thread.join(HANG)
        assert not thread.is_alive()
    finally:
        os.close(reader)
    assert received == [payload.encode()]


def test_a_reader_that_stops_reading_makes_the_write_give_up(tmp_path: Path, writer: SafeWriter) -> None:
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    payload = "x" * (2 * 1024 * 1024)  # more than any default pipe buffer
    reader = open_reader(fifo)
    try:
        started = time.monotonic()
        error = run_bounded(lambda: writer.write_text(fifo, payload, timeout=0.3))
        elapsed = time.monotonic() - started
    finally:
        os.close(reader)
    assert isinstance(error, OSError)
    assert error.errno == errno.ETIMEDOUT
    assert f"of {len(payload)} bytes in 0.3 s; gave up" in str(error.strerror)
    assert 0.25 <= elapsed < safe_write.WRITE_TIMEOUT


def test_a_reader_that_closes_early_is_reported(tmp_path: Path, writer: SafeWriter) -> None:
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    payload = "y" * (2 * 1024 * 1024)
    reader = open_reader(fifo)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            writer.write_text(fifo, payload)
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        assert drain(reader, 1)  # the writer is in: the pipe has data
    finally:
        os.close(reader)
    thread.join(HANG)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, BrokenPipeError)
    assert "the reader closed the FIFO after" in str(error.strerror)


# --- character devices (private nodes, never the real /dev) -------------------------------------


def assert_still_the_device(node: Path, major: int, minor: int) -> None:
    """``node`` is still the device it was made as, alone in its directory (nothing written beside)."""
    st = node.lstat()
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(major, minor)
    assert listing(node.parent) == [node.name]


def test_a_null_device_is_written_in_place_and_stays_a_device(tmp_path: Path, writer: SafeWriter) -> None:
    node = make_char_device(tmp_path / "null", 1, 3)
    assert writer.probe(node, OPTION) is None
    writer.write_text(node, TEXT)
    assert_still_the_device(node, 1, 3)


def test_a_full_device_reports_no_space_and_is_never_replaced(tmp_path: Path, writer: SafeWriter) -> None:
    # `--race-html /dev/full` once left a regular file in place of the device.
    node = make_char_device(tmp_path / "full", 1, 7)
    assert writer.probe(node, OPTION) is None  # opening works; only the write fails
    with pytest.raises(OSError, match=r"No space left on device") as info:
        writer.write_text(node, TEXT)
    assert info.value.errno == errno.ENOSPC
    assert_still_the_device(node, 1, 7)


def test_a_symlink_to_a_device_leaves_both_in_place(tmp_path: Path, writer: SafeWriter) -> None:
    node = make_char_device(tmp_path / "null", 1, 3)
    link = tmp_path / "stdout"
    link.symlink_to(node)
    writer.write_text(link, TEXT)
    assert link.is_symlink()
    assert stat.S_ISCHR(node.lstat().st_mode)
    assert listing(tmp_path) == ["null", "stdout"]


def test_describe_target_says_how_a_path_is_written(tmp_path: Path) -> None:
    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    assert describe_target(fifo) == f"FIFO {fifo}, written in place"
    new = describe_target(tmp_path / "r.html")
    assert new.startswith("regular file ")
    assert new.endswith("r.html, created by write-and-rename")
    assert describe_target(tmp_path) == f"{tmp_path}: is a directory"
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    assert describe_target(Path("/dev/null")) == "character device /dev/null, written in place"
