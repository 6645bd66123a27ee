"""Shards over a real ssh gateway: execnet through a throwaway sshd on a loopback port."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import execnet
import pytest

from pytest_seatrace import ServiceHandle

pytest.register_assert_rewrite("tests.sshd")  # before the import, so registering it below is clean
from tests import sshd  # noqa: E402
from tests.sshd import SshServer  # noqa: E402
from tests.support import INNER_INI  # noqa: E402

pytest_plugins = ("tests.sshd",)  # the sshd_server fixture

FAR_SIDE = """
import os, sys
import pytest_seatrace
channel.send({
    "module": pytest_seatrace.__file__,
    "executable": sys.executable,
    "pid": os.getpid(),
    "cwd": os.getcwd(),
    "ssh_connection": os.environ.get("SSH_CONNECTION"),
    "pythonpath": os.environ.get("PYTHONPATH"),
})
"""


def gone(pid: int, within: float) -> bool:
    """True once no process ``pid`` exists, polled for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.sshd
def test_ssh_gateway_runs_this_checkout_in_another_process(sshd_server: SshServer) -> None:
    group = execnet.Group()
    try:
        gateway = group.makegateway(sshd_server.spec)
        channel = gateway.remote_exec(FAR_SIDE)
        far: dict[str, Any] = channel.receive(timeout=30)
        channel.waitclose(timeout=30)
        gateway.exit()
    finally:
        group.terminate(timeout=10)
    # It went through our sshd: the far side's SSH_CONNECTION ends at the fixture's port.
    assert far["ssh_connection"] is not None
    assert far["ssh_connection"].split()[2:] == ["127.0.0.1", str(sshd_server.port)]
    # A fresh login environment: nothing but the gateway's chdir puts this checkout first.
    assert far["pythonpath"] is None
    assert far["pid"] != os.getpid()
    assert far["executable"] == sys.executable
    assert Path(far["cwd"]) == sshd_server.checkout
    assert Path(far["module"]).resolve() == sshd_server.checkout / "pytest_seatrace" / "__init__.py"
    # The gateway's exit ended the far process.
    assert gone(far["pid"], within=10), f"far-side python {far['pid']} still running after gateway.exit()"


@pytest.fixture
def keys() -> Iterator[tuple[tuple[str, str, str], Path]]:
    """The OpenSSH binaries and a private directory holding host_key, user_key and other_key."""
    binaries = sshd.find_binaries()
    if binaries is None:
        pytest.skip("OpenSSH server or client not installed")
    directory = sshd.private_directory()
    try:
        for name in ("host_key", "user_key", "other_key"):
            sshd.generate_key(binaries[2], directory / name, name)
        yield binaries, directory
    finally:
        shutil.rmtree(directory)


def failure_to_start(binaries: tuple[str, str, str], directory: Path) -> str:
    with pytest.raises(pytest.fail.Exception) as failed:
        sshd.start(binaries[0], binaries[1], directory, pwd.getpwuid(os.getuid()).pw_name)
    message = str(failed.value)
    assert message.startswith(f"sshd ({binaries[0]}) on 127.0.0.1:")
    return message


def corrupt_host_key(directory: Path) -> None:
    (directory / "host_key").write_text("not a key\n", encoding="utf-8")


def authorize_another_key(directory: Path) -> None:
    shutil.copy(directory / "other_key.pub", directory / "user_key.pub")


@pytest.mark.sshd
@pytest.mark.parametrize(
    ("breakage", "said"),
    [
        (corrupt_host_key, ["exited before listening", "no hostkeys available"]),
        (authorize_another_key, ["let no login through", "Permission denied (publickey)"]),
    ],
)
def test_sshd_that_will_not_serve_fails_with_its_own_log(
    keys: tuple[tuple[str, str, str], Path], breakage: Callable[[Path], None], said: list[str]
) -> None:
    """Installed but not serving (dead, or listening but refusing the login) is a failure with
    sshd's own log, never a skip."""
    breakage(keys[1])
    message = failure_to_start(*keys)
    assert "--- sshd.log ---" in message
    for text in said:
        assert text in message


@pytest.mark.sshd
def test_a_login_that_prints_fails_before_any_gateway(
    keys: tuple[tuple[str, str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell profile that writes to stdout would garble execnet's protocol: the fixture says so."""
    write_configs = sshd.write_configs

    def noisy(directory: Path, port: int, user: str) -> tuple[Path, Path]:
        server, client = write_configs(directory, port, user)
        with server.open("a", encoding="utf-8") as config:
            config.write("ForceCommand echo welcome to the box\n")
        return server, client

    monkeypatch.setattr(sshd, "write_configs", noisy)
    message = failure_to_start(*keys)
    assert "the login printed 'welcome to the box' before any command ran" in message


def test_without_openssh_the_fixture_skips_saying_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshd, "find_binaries", lambda: None)
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        pytest_plugins = ("tests.sshd",)

        def test_over_ssh(sshd_server):
            raise AssertionError("ran without sshd")
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*OpenSSH server or client not installed*apt-get install openssh-server*"])


SEATS, CLIENTS = 4, 20
SHARDED_RACES = """
import pytest

def seat(a):
    return {{"seats": [a.resource], "user": f"u{{a.client}}"}}

@pytest.mark.race(resources={seats}, concurrency={clients})
def test_safe(race):
    race.post("{safe}/orders", json=seat)

@pytest.mark.race(resources={seats}, concurrency={clients})
def test_unsafe(race):
    race.post("{unsafe}/orders", json=seat)
"""


def logins(server: SshServer) -> int:
    """Sessions our sshd has started so far (its VERBOSE log says so per command)."""
    return server.log.read_text(encoding="utf-8", errors="replace").count("Starting session: command")


@pytest.mark.sshd
def test_sharded_race_over_ssh_and_popen(
    pytester: pytest.Pytester,
    sshd_server: SshServer,
    sample_service: ServiceHandle,
    sample_service_factory: Callable[..., ServiceHandle],
) -> None:
    """One race's clients over an ssh shard and a popen shard: the safe service passes with
    exactly one winner per seat and every request accounted for, the unsafe one is caught."""
    unsafe = sample_service_factory(strategy="unsafe", window_ms=50)
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_sharded=SHARDED_RACES.format(
            seats=SEATS, clients=CLIENTS, safe=sample_service.url, unsafe=unsafe.url
        )
    )
    report = pytester.path / "races.json"
    before = logins(sshd_server)
    result = pytester.runpytest_subprocess(
        "-v", "-p", "no:cacheprovider", "--race-tx", sshd_server.spec, "--race-tx", "popen",
        "--race-json", str(report),
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    assert logins(sshd_server) > before  # the ssh shard really logged in through our sshd
    races = {
        race["name"].rpartition("::")[2]: race for race in json.loads(report.read_text("utf-8"))["races"]
    }

    for race in races.values():
        history = race["history"]
        # Every request accounted for: one record per (seat, client), from both shards per seat.
        pairs = Counter(zip(history["resource"], history["client"], strict=True))
        assert sorted(pairs) == sorted(
            (str(s), c) for s in range(1, SEATS + 1) for c in range(1, CLIENTS + 1)
        )
        assert set(pairs.values()) == {1}
        assert race["requests"] == SEATS * CLIENTS == race["wins"] + race["rejections"]
        assert (race["errors"], race["unknown"]) == (0, 0)
        for seat in map(str, range(1, SEATS + 1)):
            shards = {n for r, n in zip(history["resource"], history["shard"], strict=True) if r == seat}
            assert shards == {1, 2}, f"seat {seat} not contended from both shards"
        ssh, popen = race["shards"]
        assert (ssh["spec"], popen["spec"]) == (sshd_server.spec, "popen")
        assert ssh["host"] == popen["host"] == socket.gethostname()  # loopback: this host
        assert ssh["pid"] not in (popen["pid"], os.getpid())
        assert (ssh["failure"], popen["failure"]) == (None, None)
        assert ssh["requests"] + popen["requests"] == SEATS * CLIENTS

    safe = races["test_safe"]
    assert safe["passed"]
    assert safe["violations"] == []
    assert safe["wins"] == SEATS
    for seat, wins in safe["winners"].items():
        assert len(wins) == 1
        assert sample_service.holders(seat) == [f"u{wins[0]['client']}"]

    caught = races["test_unsafe"]
    assert not caught["passed"]
    assert {v["kind"] for v in caught["violations"]} == {"too-many"}
    assert any(len(unsafe.holders(seat)) > 1 for seat in range(1, SEATS + 1))  # it really double-booked
    host = socket.gethostname()
    result.stdout.fnmatch_lines(
        [
            "*test_sharded.py::test_unsafe*FAIL*",
            f"*shard 1 {sshd_server.spec} on {host}: * requests, spread * ms, clock offset *",
            f"*shard 2 popen on {host}: * requests*",
        ]
    )
