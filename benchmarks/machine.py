"""What the machine was doing: its cores, load, CPU time of this and other processes (Linux /proc)."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Sequence
from pathlib import Path


def cores() -> int:
    """CPUs this process may run on (the affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_note() -> str:
    return f"client and server share this machine's {cores()} cores (service in a separate process)"


def load1() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def load_note() -> str:
    """The load average at the time of printing: the machine may be shared and noisy."""
    if not hasattr(os, "getloadavg"):
        return ""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def rusage_cpu_s(who: int) -> float:
    """User + system CPU so far of this process (``resource.RUSAGE_SELF``) or of its children
    that ended (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU of another process so far, all its threads (Linux ``/proc``; NaN
    elsewhere, or once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return math.nan
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of a process have so far spent runnable but waiting for a CPU
    (Linux ``/proc/PID/task/*/schedstat``, the second field; NaN elsewhere). A process that
    shares the cores waits there while others hold them."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        waits = [int(task.joinpath("schedstat").read_text(encoding="ascii").split()[1]) for task in tasks]
    except (OSError, IndexError, ValueError):
        return math.nan
    return sum(waits) / 1e9


def cpu_times() -> list[int]:
    """The machine's CPU time so far by kind (Linux ``/proc/stat``: user, nice, system, idle,
    iowait, irq, softirq, steal), in clock ticks; empty elsewhere."""
    try:
        line = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
    except (OSError, IndexError):
        return []
    return [int(field) for field in line.split()[1:9]]


def steal_note(before: Sequence[int]) -> str:
    """How much of the machine's CPU time since ``before`` (``cpu_times()``) the hypervisor
    gave to other guests: on a shared host it is what makes one run differ from the next."""
    after = cpu_times()
    if len(before) < 8 or len(after) < 8:
        return "steal: unknown"
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return f"hypervisor steal {100 * spent[7] / total:.1f} % of CPU time" if total else "steal: none"
