"""A throwaway OpenSSH server on a loopback port, for tests that open real execnet ssh gateways.

The ``sshd_server`` fixture (session scope; register it with ``pytest_plugins = ("tests.sshd",)``)
runs ``sshd -D`` as its own child process with a generated host key and user key pair in a 0700
directory, logs in once with ``ssh`` to prove it serves, and yields an ``SshServer`` whose
``spec`` is an execnet gateway spec reaching this checkout's Python through it. Skipped when the
OpenSSH binaries are absent; a failure (not a skip) when sshd is installed but will not serve.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop

HOST_ALIAS = "seatrace-test"
REPO_ROOT = Path(__file__).resolve().parents[1]
PRIVSEP_DIR = Path("/run/sshd")  # Debian's privilege-separation chroot; sshd refuses to start without it
START_BUDGET = 20.0  # seconds for sshd to listen and let one login through
POLL = 0.02
LOGIN_ATTEMPTS = 5
PORT_ATTEMPTS = 3  # a free port found here may be taken before sshd binds it


@dataclass(frozen=True, slots=True)
class SshServer:
    """A running throwaway sshd and how to reach it."""

    port: int
    user: str
    directory: Path
    client_config: Path
    log: Path
    checkout: Path  # the far side's working directory, so ``import pytest_seatrace`` finds this tree
    spec: str  # execnet gateway spec: ssh through ``client_config``, this Python, cwd = ``checkout``


def find_binaries() -> tuple[str, str, str] | None:
    """(sshd, ssh, ssh-keygen), or None when one is missing."""
    search = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", os.environ.get("PATH", "")])
    sshd = "/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else shutil.which("sshd", path=search)
    ssh, keygen = shutil.which("ssh", path=search), shutil.which("ssh-keygen", path=search)
    if sshd is None or ssh is None or keygen is None:
        return None
    return str(Path(sshd).resolve()), ssh, keygen  # sshd re-execs itself: it needs an absolute path


def private_directory() -> Path:
    """A new directory only this user can enter (ssh refuses keys and configs others could touch)."""
    path = Path(tempfile.mkdtemp(prefix="seatrace-sshd-"))
    info = path.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        shutil.rmtree(path)
        pytest.fail(f"{path} is not private to uid {os.getuid()} (mode {stat.S_IMODE(info.st_mode):o})")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def generate_key(keygen: str, path: Path, comment: str) -> None:
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def write_configs(directory: Path, port: int, user: str) -> tuple[Path, Path]:
    """sshd_config and the client's ssh_config for ``port``; the client pins the generated host key."""
    server = directory / "sshd_config"
    server.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {directory / 'host_key'}",
                f"AuthorizedKeysFile {directory / 'user_key.pub'}",
                f"PidFile {directory / 'sshd.pid'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "UseDNS no",
                "PrintMotd no",
                "X11Forwarding no",
                "LogLevel VERBOSE",
                "",
            ]
        ),
        encoding="utf-8",
    )
    host_public = (directory / "host_key.pub").read_text(encoding="utf-8").split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"{HOST_ALIAS} {host_public[0]} {host_public[1]}\n", encoding="utf-8")
    client = directory / "ssh_config"
    client.write_text(
        "\n".join(
            [
                f"Host {HOST_ALIAS}",
                "    HostName 127.0.0.1",
                f"    Port {port}",
                f"    User {user}",
                f"    IdentityFile {directory / 'user_key'}",
                "    IdentitiesOnly yes",
                "    PreferredAuthentications publickey",
                f"    HostKeyAlias {HOST_ALIAS}",
                f"    UserKnownHostsFile {known_hosts}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    BatchMode yes",
                "    ConnectTimeout 5",
                "    ControlMaster no",
                "    LogLevel ERROR",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return server, client


def logs(directory: Path) -> str:
    parts = []
    for name in ("sshd.log", "sshd.stderr"):
        path = directory / name
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        parts.append(f"--- {name} ---\n{text.strip() or '(empty)'}")
    return "\n".join(parts)


def listening(port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll a TCP connect until it succeeds; False when sshd exits or the deadline passes."""
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(POLL)
    return False


def login(ssh: str, client: Path, process: subprocess.Popen[bytes], deadline: float) -> str | None:
    """Run ``ssh host true`` a bounded number of times; None once it succeeds, else the last error."""
    error = f"let no login through within {START_BUDGET} s"
    for _ in range(LOGIN_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if process.poll() is not None:
            return f"exited during a login ({error})"
        if remaining <= 0:
            break
        try:
            done = subprocess.run(
                [ssh, "-F", str(client), HOST_ALIAS, "true"],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"let no login through within {START_BUDGET} s (ssh {HOST_ALIAS} true timed out)"
        if done.returncode == 0 and done.stdout:
            # execnet's ssh gateway speaks its protocol over the login's stdout: it must be silent.
            printed = done.stdout.decode(errors="replace").strip()[:200]
            return f"let a login through, but the login printed {printed!r} before any command ran"
        if done.returncode == 0:
            return None
        said = done.stderr.decode(errors="replace").strip()
        error = f"let no login through: ssh exited {done.returncode}: {said}"
        time.sleep(POLL)
    return error


def start(sshd: str, ssh: str, directory: Path, user: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start sshd on a free loopback port and wait until a login goes through; pytest.fail otherwise."""
    failure = ""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        server, client = write_configs(directory, port, user)
        log = directory / "sshd.log"
        log.unlink(missing_ok=True)
        with (directory / "sshd.stderr").open("wb") as stderr:
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-E", str(log), "-f", str(server)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_BUDGET
        if listening(port, process, deadline):
            error = login(ssh, client, process, deadline)
        elif process.poll() is not None:
            error = "exited before listening"
        else:
            error = f"accepted no TCP connection within {START_BUDGET} s"
        if error is None:
            return process, port, client
        status = process.poll()
        stop(process)
        how = f"exit status {status}" if status is not None else "stopped by the fixture"
        failure = f"sshd ({sshd}) on 127.0.0.1:{port} {error} ({how})"
        if "Address already in use" not in logs(directory):
            break
    pytest.fail(f"{failure}\n{logs(directory)}", pytrace=False)


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[SshServer]:
    """A throwaway sshd on 127.0.0.1 that lets this user in with a generated key."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("OpenSSH server or client not installed (Debian: apt-get install openssh-server)")
    sshd, ssh, keygen = binaries
    if os.getuid() == 0 and not PRIVSEP_DIR.exists():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    directory = private_directory()
    try:
        generate_key(keygen, directory / "host_key", "seatrace-test host")
        generate_key(keygen, directory / "user_key", "seatrace-test user")
        process, port, client = start(sshd, ssh, directory, user)
        try:
            spec = f"ssh={HOST_ALIAS}//ssh_config={client}//python={sys.executable}//chdir={REPO_ROOT}"
            yield SshServer(port, user, directory, client, directory / "sshd.log", REPO_ROOT, spec)
        finally:
            stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
