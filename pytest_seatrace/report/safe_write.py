"""Writing a report file safely, whatever the user pointed ``--race-json`` / ``--race-html`` at.

What :func:`os.stat` finds at the path decides how it is written:

* a regular file, or nothing (a new file, or a dangling symlink): the text goes to a temporary
  file beside the *symlink-resolved* target, which is then renamed over the target. A reader never
  sees half a report, and a symlink stays a symlink while its target gets the text. Directories
  are never created: the target's directory must exist.

  A new file gets mode ``0o666 & ~umask`` (not :func:`tempfile.mkstemp`'s ``0o600``, which would
  hide the report from CI artifact steps). An existing file keeps its permission bits (and, where
  the process may, its owner and group); being replaced by a new inode, it loses any further hard
  links, which keep the old text.

* anything else (a character device such as ``/dev/null`` or ``/dev/stdout``, a FIFO): the path
  is opened in place with ``O_WRONLY | O_NONBLOCK`` (plus ``O_NOCTTY | O_CLOEXEC``), never
  created, truncated or renamed over, so ``/dev/full`` stays a device and reports ``ENOSPC``. A
  FIFO with no reader (``ENXIO``) is an error, never waited on; a reader that stops reading is
  waited on for a bounded time only (:data:`WRITE_TIMEOUT`), never for ever.

* a directory is an error.

:meth:`SafeWriter.probe` makes, at start-up, the probe the final :meth:`~SafeWriter.write_text`
will make: a temporary file created and removed in the resolved target's directory for a regular
path, the non-blocking open for anything else. It returns a one-line message naming the option,
or ``None``.

A FIFO's start-up probe keeps the write end it opened: closing it would hand end-of-file to a
reader already waiting (``cat fifo``), which would then be gone by the time the report is written.
The same :class:`SafeWriter`'s :meth:`~SafeWriter.write_text` takes that descriptor over and closes
it after writing; its :meth:`~SafeWriter.release` closes any descriptor a probe kept for a report
that is not going to be written. The writer belongs to the session (its controller role), so no
descriptor lives in a module global.

Failures are raised as :class:`OSError` with the usual ``errno`` and a ``strerror`` that says
what went wrong in words (``"FIFO has no reader"``, ``"directory /x does not exist"``); its
``filename`` is the path as given.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WRITE_TIMEOUT", "SafeWriter", "describe_target"]

#: Seconds a FIFO's or device's reader gets, in all, to take the whole report.
WRITE_TIMEOUT = 5.0

_SPECIAL_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class _Regular:
    """Written by write-and-rename: ``target`` is the symlink-resolved path."""

    path: Path
    target: Path
    existing: os.stat_result | None


@dataclass(frozen=True)
class _Special:
    """Written in place: a FIFO, a device, a socket (which cannot be opened)."""

    path: Path
    st: os.stat_result


_KINDS = (
    (stat.S_ISREG, "regular file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _kind(mode: int) -> str:
    """What ``mode`` says is at a path, in words for messages."""
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "special file")


def _error(code: int | None, message: str, path: Path) -> OSError:
    # OSError(errno, ...) builds the matching subclass (PermissionError, FileNotFoundError, ...).
    return OSError(code if code is not None else errno.EIO, message, str(path))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _plan(path: Path) -> _Regular | _Special:
    given = path
    path = path.expanduser()
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None  # a new file, a dangling symlink, or a missing directory (checked below)
    except OSError as exc:  # ENOTDIR, ELOOP, EACCES on a directory on the way
        raise _error(exc.errno, f"cannot look up the path ({_reason(exc)})", given) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _error(errno.EISDIR, "is a directory", given)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return _Special(path, st)
    target = Path(os.path.realpath(path))
    if st is None:
        parent = target.parent
        try:
            parent_st = parent.stat()
        except FileNotFoundError as exc:
            raise _error(errno.ENOENT, f"directory {parent} does not exist", given) from exc
        except OSError as exc:
            raise _error(exc.errno, f"cannot look up directory {parent} ({_reason(exc)})", given) from exc
        if not stat.S_ISDIR(parent_st.st_mode):
            raise _error(errno.ENOTDIR, f"{parent} is not a directory", given)
    return _Regular(path, target, st)


def _umask() -> int:
    # Linux shows the umask without changing it; elsewhere set-and-restore (racy across threads,
    # but only for the instant between the two calls).
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- regular files ------------------------------------------------------------------------------


def _make_temp(plan: _Regular, given: Path) -> tuple[int, Path]:
    directory = plan.target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{plan.target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _error(exc.errno, f"cannot create a file in {directory} ({_reason(exc)})", given) from exc
    return fd, Path(name)


def _probe_regular(plan: _Regular, given: Path) -> None:
    fd, tmp = _make_temp(plan, given)
    os.close(fd)
    tmp.unlink(missing_ok=True)
    existing = plan.existing
    euid = os.geteuid()
    if existing is None or euid == 0:
        return
    # Renaming over someone else's file in a sticky directory (/tmp) is refused (EPERM), though
    # creating a file there is not; say so now rather than at the end.
    parent_st = plan.target.parent.stat()
    if parent_st.st_mode & stat.S_ISVTX and euid not in (existing.st_uid, parent_st.st_uid):
        raise _error(
            errno.EPERM,
            f"cannot replace {plan.target}: it belongs to another user in sticky directory "
            f"{plan.target.parent}",
            given,
        )


def _write_regular(plan: _Regular, data: bytes, given: Path) -> None:
    fd, tmp = _make_temp(plan, given)
    try:
        with os.fdopen(fd, "wb") as fh:
            existing = plan.existing
            if existing is None:
                mode = 0o666 & ~_umask()
            else:
                mode = stat.S_IMODE(existing.st_mode) & 0o777
                new = os.fstat(fh.fileno())
                if (new.st_uid, new.st_gid) != (existing.st_uid, existing.st_gid):
                    with suppress(OSError):  # allowed for root, or for a group one belongs to
                        os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
            try:
                os.fchmod(fh.fileno(), mode)
                fh.write(data)
                fh.flush()
            except OSError as exc:
                raise _error(exc.errno, f"cannot write {tmp} ({_reason(exc)})", given) from exc
        # What is at the target now must still be a regular file (or nothing): never rename over
        # a device, a FIFO or a symlink that appeared since the path was looked at.
        try:
            now = os.lstat(plan.target)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(now.st_mode):
                raise _error(
                    errno.EEXIST,
                    f"{plan.target} became a {_kind(now.st_mode)} while the report was written; "
                    "left as it is",
                    given,
                )
        try:
            tmp.replace(plan.target)
        except OSError as exc:
            raise _error(exc.errno, f"cannot replace {plan.target} ({_reason(exc)})", given) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- FIFOs and devices --------------------------------------------------------------------------


def _open_failure(plan: _Special, exc: OSError) -> str:
    kind = _kind(plan.st.st_mode)
    if exc.errno == errno.ENXIO:
        if stat.S_ISFIFO(plan.st.st_mode):
            return "FIFO has no reader"
        if stat.S_ISSOCK(plan.st.st_mode):
            return "is a socket, which cannot be opened as a file"
        return f"{kind} is not present ({_reason(exc)})"
    return f"cannot open {kind} for writing ({_reason(exc)})"


def _open_special(plan: _Special, given: Path) -> int:
    # The path as given, not its resolution: /dev/stdout resolves to /proc/self/fd/1 and on to
    # names such as "pipe:[1234]" that cannot be opened.
    try:
        fd = os.open(plan.path, _SPECIAL_FLAGS)
    except OSError as exc:
        raise _error(exc.errno, _open_failure(plan, exc), given) from exc
    try:
        opened = os.fstat(fd).st_mode
        if stat.S_ISREG(opened) or stat.S_ISDIR(opened):
            # Swapped since it was looked at; writing at offset 0 would corrupt a regular file.
            raise _error(
                errno.EEXIST,
                f"became a {_kind(opened)} while being opened; left as it is",
                given,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _wait_writable(fd: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    # POLLERR/POLLHUP count too: the next write then says what happened.
    return bool(poller.poll(max(1, int(seconds * 1000))))


def _write_special(plan: _Special, data: bytes, given: Path, timeout: float, held: int | None) -> None:
    """Write in place through ``held`` (the write end a probe kept) or a fresh non-blocking open."""
    fd = _open_special(plan, given) if held is None else held
    kind = _kind(plan.st.st_mode)
    try:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                done = os.write(fd, view)
            except BlockingIOError:
                done = 0
            except BrokenPipeError as exc:
                raise _error(
                    errno.EPIPE,
                    f"the reader closed the {kind} after {len(data) - len(view)} of {len(data)} bytes",
                    given,
                ) from exc
            except OSError as exc:
                raise _error(exc.errno, f"cannot write to {kind} ({_reason(exc)})", given) from exc
            view = view[done:]
            if view and done == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not _wait_writable(fd, remaining):
                    raise _error(
                        errno.ETIMEDOUT,
                        f"the reader of the {kind} took {len(data) - len(view)} of {len(data)} bytes "
                        f"in {timeout:g} s; gave up",
                        given,
                    )
    finally:
        os.close(fd)


# --- public API ---------------------------------------------------------------------------------


class SafeWriter:
    """Probes and writes report files; keeps the FIFO write ends its probes opened until the write.

    One per session (the controller role owns it), so what a start-up probe opened is taken over
    by that session's final write, or closed by :meth:`release`, and never outlives the session.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], int] = {}
        """Write ends of FIFOs opened by :meth:`probe`, by (st_dev, st_ino)."""
        self._lock = threading.Lock()

    def probe(self, path: Path, option: str) -> str | None:
        """Why writing ``path`` at the end would fail, as ``"{option} {path}: {why}"``; else ``None``.

        The same probe the final write makes: a temporary file created and removed in the resolved
        target's directory for a regular (or new) path; the non-blocking open for anything else. A
        FIFO's write end is kept open for :meth:`write_text` (see the module's documentation).
        """
        try:
            plan = _plan(path)
            if isinstance(plan, _Regular):
                _probe_regular(plan, path)
            else:
                self._probe_special(plan, path)
        except OSError as exc:
            return f"{option} {path}: {_reason(exc)}"
        return None

    def write_text(self, path: Path, text: str, *, timeout: float = WRITE_TIMEOUT) -> None:
        """Write ``text`` (UTF-8) to ``path`` safely; raise :class:`OSError` saying why not.

        ``timeout`` bounds, in all, how long a FIFO's or device's reader may take to accept the
        text.
        """
        data = text.encode("utf-8")
        plan = _plan(path)
        if isinstance(plan, _Regular):
            _write_regular(plan, data, path)
        else:
            _write_special(plan, data, path, timeout, self._take_held(plan))

    def release(self, path: Path | None = None) -> None:
        """Close the FIFO write end a :meth:`probe` kept for ``path`` (for every path if ``None``)."""
        with self._lock:
            if path is None:
                fds = list(self._held.values())
                self._held.clear()
            else:
                try:
                    st = path.expanduser().stat()
                except OSError:
                    return
                fd = self._held.pop(_key(st), None)
                fds = [] if fd is None else [fd]
        for fd in fds:
            with suppress(OSError):
                os.close(fd)

    def _probe_special(self, plan: _Special, given: Path) -> None:
        if stat.S_ISFIFO(plan.st.st_mode):
            with self._lock:
                if _key(plan.st) in self._held:
                    return
            fd = _open_special(plan, given)
            with self._lock:
                previous = self._held.setdefault(_key(plan.st), fd)
            if previous != fd:
                os.close(fd)
            return
        os.close(_open_special(plan, given))

    def _take_held(self, plan: _Special) -> int | None:
        """The write end a probe kept for this FIFO, if it is still that FIFO's."""
        with self._lock:
            fd = self._held.pop(_key(plan.st), None)
        if fd is None:
            return None
        try:
            if _key(os.fstat(fd)) == _key(plan.st):
                return fd
        except OSError:
            return None  # closed behind our back
        os.close(fd)
        return None


def describe_target(path: Path) -> str:
    """How :meth:`SafeWriter.write_text` would treat ``path``, in words (for messages and ``--help`` text)."""
    try:
        plan = _plan(path)
    except OSError as exc:
        return f"{path}: {_reason(exc)}"
    if isinstance(plan, _Special):
        return f"{_kind(plan.st.st_mode)} {plan.path}, written in place"
    how = "replaced" if plan.existing is not None else "created"
    via = f" (via {plan.path})" if plan.target != plan.path.absolute() else ""
    return f"regular file {plan.target}{via}, {how} by write-and-rename"
