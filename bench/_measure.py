"""Process and machine measurements shared by the bench scripts: the process tree, per-process CPU
time, RSS and PSS, the machine's busy CPU time (psutil), and the machine facts and peak-RSS
figures the reports print.

psutil is imported on first use, not with this module: the measured subprocesses (the phases of
warehouse_scale.py and publish_scale.py, the drivers of corpus_scale.py and ingest_scale.py) import
this module for their own peak RSS, which psutil's 2.6 MiB would otherwise join, and the machine
facts need only the standard library (table_format_spike.py runs in venvs without psutil).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import psutil


def _psutil():
    try:
        import psutil
    except ImportError as exc:
        raise ImportError("the bench scripts' process sampling needs psutil: pip install -e '.[bench]'") from exc
    return psutil


# --- the machine ----------------------------------------------------------------------------------


def cpu_model() -> str | None:
    """The first "model name" of /proc/cpuinfo (psutil has no CPU model), None if there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def memory_total_bytes() -> int:
    """Physical memory: MemTotal, the figure psutil.virtual_memory().total also reports."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages with two decimals, as /proc/loadavg shows them
    (os.getloadavg, which psutil.getloadavg is on Linux)."""
    return [f"{x:.2f}" for x in os.getloadavg()]


def loadavg_text() -> str:
    return " ".join(loadavg())


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores: user, nice, system, irq,
    softirq and steal time (idle and iowait left out)."""
    t = _psutil().cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


# --- this process ---------------------------------------------------------------------------------


def own_cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    t = _psutil().Process().cpu_times()
    return t.user + t.system


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's terminated and waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    """This process's ru_maxrss in MiB. Linux carries ru_maxrss over exec from the forking parent;
    vm_hwm_kib is this process image's own."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_kib() -> int:
    """This process's peak RSS since its exec (VmHWM in /proc/self/status; psutil does not report it)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


# --- other processes ------------------------------------------------------------------------------


def started_at(t_monotonic: float) -> float:
    """The creation time psutil gives a process started at ``time.monotonic()`` value ``t_monotonic``:
    a process started at that moment or later has a ``Reading.started`` at least this large."""
    # psutil's create_time is the boot time plus the start time since boot in whole clock ticks (the
    # boot-time clock, CLOCK_BOOTTIME): truncated the same way, a process started in the same tick
    # as t_monotonic compares equal, not earlier.
    hz = os.sysconf("SC_CLK_TCK")
    since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - (time.monotonic() - t_monotonic)
    return _psutil().boot_time() + math.floor(since_boot * hz) / hz


def processes() -> list[psutil.Process]:
    """Every process on the machine, as psutil.process_iter's handles. A handle compares and hashes by
    pid and creation time, so it can key a cache that a reused pid does not hit."""
    return list(_psutil().process_iter())


def tree(roots: Iterable[int | psutil.Process], everyone: Iterable[psutil.Process] = ()) -> dict[int, psutil.Process]:
    """The processes ``roots`` and all their descendants, by pid (roots that are gone are left out).
    One root: psutil's ``children(recursive=True)``. More than one: a single pass over the parent
    pids of ``everyone`` (default: every process), cheaper than a scan per root."""
    ps = _psutil()
    handles = []
    for r in roots:
        try:
            handles.append(r if isinstance(r, ps.Process) else ps.Process(r))
        except ps.NoSuchProcess:
            pass
    if not handles:
        return {}
    if len(handles) == 1:
        try:
            return {handles[0].pid: handles[0], **{c.pid: c for c in handles[0].children(recursive=True)}}
        except ps.NoSuchProcess:
            return {}
    kids: dict[int, list[psutil.Process]] = {}
    for p in everyone or processes():
        try:
            kids.setdefault(p.ppid(), []).append(p)
        except ps.Error:
            pass
    out: dict[int, psutil.Process] = {}
    todo = list(handles)
    while todo:
        p = todo.pop()
        if p.pid not in out:
            out[p.pid] = p
            todo.extend(kids.get(p.pid, []))
    return out


class Reading(NamedTuple):
    started: float  # creation time, seconds since the epoch (psutil's create_time)
    cpu_s: float  # user + system CPU seconds used so far
    rss: int  # bytes
    pss: int  # bytes (0 unless asked for, or unreadable)
    cmdline: str  # the arguments joined by spaces ("" if unreadable)


def read(p: psutil.Process, pss: bool = False) -> Reading | None:
    """What one process has used so far; None if it is gone. ``pss``: also its proportional set size
    (memory_full_info: /proc/PID/smaps_rollup, the costly read)."""
    ps = _psutil()
    try:
        with p.oneshot():
            started, cpu, rss = p.create_time(), p.cpu_times(), p.memory_info().rss
    except ps.Error:
        return None
    return Reading(started, cpu.user + cpu.system, rss, pss_bytes(p) if pss else 0, cmdline(p))


def pss_bytes(p: psutil.Process) -> int:
    ps = _psutil()
    try:
        return getattr(p.memory_full_info(), "pss", 0)
    except (ps.Error, OSError):
        return 0


def cmdline(p: psutil.Process) -> str:
    ps = _psutil()
    try:
        return " ".join(p.cmdline()).strip()
    except ps.Error:
        return ""


def environ(p: psutil.Process) -> dict[str, str]:
    """The process's environment ({} where it cannot be read: another user's process, a zombie)."""
    ps = _psutil()
    try:
        return p.environ()
    except ps.Error:
        return {}
