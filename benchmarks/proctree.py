"""Measure one command's whole process tree: wall time, CPU time and peak memory.

``measure(cmd)`` must run in a process whose only children are the command's tree (use
:func:`measure_in_subprocess`, which starts such a process: ``python -m benchmarks.proctree``):

- It makes itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``), so every descendant
  that is orphaned (a pool worker its parent never waited for, a resource tracker, a daemonised
  helper) is reparented to it instead of to init. After the command exits it waits for and reaps
  every remaining child, so ``getrusage(RUSAGE_CHILDREN)`` then holds the user and system CPU
  time of the entire tree: waited children's times roll up into their waiting parent's.
- Peak memory: a thread reads ``VmHWM`` (the high-water mark of the resident set, which only
  grows) and ``VmRSS`` from ``/proc/<pid>/status`` of every process in the tree every 0.1 s and
  keeps the last value seen per pid. The tree's peak is the sum of the per-process peaks (an
  upper bound: processes that never ran at the same time are added too); ``rss_sum_max`` is the
  largest sum of ``VmRSS`` seen in one sample (a lower bound of the true simultaneous peak).
  ``ru_maxrss`` is not used: Linux carries it over ``exec`` from the forked parent.

Stdlib only, so the measuring process stays small and starts fast.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_S = 0.1


@dataclass(slots=True)
class TreeMeasure:
    returncode: int
    wall_s: float  # from start until the command's own process exited
    cpu_user_s: float  # the whole tree, reaped
    cpu_sys_s: float
    main_peak_kib: int  # VmHWM of the command's own process
    tree_peak_kib: int  # sum over every process seen of its VmHWM
    rss_sum_max_kib: int  # largest sum of VmRSS over the tree in one sample
    processes: int  # distinct processes seen in the tree
    killed: list[int] = field(default_factory=list)  # orphans still running 120 s after the end
    peaks_kib: dict[str, int] = field(default_factory=dict)  # "pid name" -> VmHWM

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (over all its threads; orphans may land on any of them)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            pass
    return kids


def _status(pid: int) -> tuple[str, int, int]:
    """(name, VmHWM kiB, VmRSS kiB); zeros once the process is a zombie or gone."""
    name, hwm, rss = "?", 0, 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return name, hwm, rss


class _Sampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.me = os.getpid()
        self.stop = threading.Event()
        self.peaks: dict[int, tuple[str, int]] = {}
        self.rss_sum_max = 0

    def sample(self) -> None:
        # The tree: the command and its descendants, plus whatever was reparented to us.
        todo = [self.root, *[k for k in children_of(self.me) if k != self.root]]
        seen: set[int] = set()
        rss_sum = 0
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            name, hwm, rss = _status(pid)
            rss_sum += rss
            if hwm:
                self.peaks[pid] = (name, max(hwm, self.peaks.get(pid, ("", 0))[1]))
            todo += children_of(pid)
        self.rss_sum_max = max(self.rss_sum_max, rss_sum)

    def run(self) -> None:
        while True:
            self.sample()
            if self.stop.wait(SAMPLE_S):
                return


def _reap_all(grace_s: float = 120.0) -> list[int]:
    """Reap every child (the command's orphans, reparented to us) until none is left.

    A child still running ``grace_s`` after the command exited is killed (it is part of the
    command's tree, so this process started it); the pids killed are returned.
    """
    deadline = time.monotonic() + grace_s
    killed: list[int] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return killed
        if pid:
            continue
        if time.monotonic() > deadline:
            for kid in children_of(os.getpid()):
                if kid not in killed:
                    killed.append(kid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(kid, signal.SIGKILL)
        time.sleep(0.02)


def measure(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: str | Path | None = None,
) -> TreeMeasure:
    """Run ``cmd`` to completion and measure its tree (see the module docstring).

    The caller must be a process with no other children (they would be reaped and counted).
    """
    set_child_subreaper()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), env=dict(env) if env is not None else None, cwd=cwd, stdout=out, stderr=out
        )
        sampler = _Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        # The command is gone; keep sampling the orphans it left until they are reaped too.
        killed = _reap_all()
        sampler.stop.set()
        sampler.join()
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks = sampler.peaks
    return TreeMeasure(
        returncode=code,
        wall_s=wall,
        cpu_user_s=after.ru_utime - before.ru_utime,
        cpu_sys_s=after.ru_stime - before.ru_stime,
        main_peak_kib=peaks.get(proc.pid, ("", 0))[1],
        tree_peak_kib=sum(hwm for _, hwm in peaks.values()),
        rss_sum_max_kib=sampler.rss_sum_max,
        processes=len(peaks),
        killed=killed,
        peaks_kib={f"{pid} {name}": hwm for pid, (name, hwm) in sorted(peaks.items())},
    )


def measure_in_subprocess(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: str | Path | None = None,
    python: str = sys.executable,
) -> TreeMeasure:
    """:func:`measure` in a fresh measuring process whose only children are ``cmd``'s tree.

    The caller's other children (a server, say) are then neither counted nor reaped.
    """
    spec = {"cmd": list(cmd), "env": dict(env) if env is not None else None, "cwd": cwd}
    spec["cwd"] = None if cwd is None else str(cwd)
    spec["log"] = None if log is None else str(log)
    here = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [python, "-m", "benchmarks.proctree"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=here,
        env={**os.environ, "PYTHONPATH": here},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed: {done.stderr.strip()[-2000:]}")
    return TreeMeasure(**json.loads(done.stdout.strip().splitlines()[-1]))


def _main() -> None:
    spec = json.loads(sys.stdin.read())
    result = measure(spec["cmd"], env=spec.get("env"), cwd=spec.get("cwd"), log=spec.get("log"))
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    _main()
