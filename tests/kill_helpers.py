"""What the SIGKILL tests (tests/test_kill_*.py) share: the processes a command started, whether
one is still running, a digest of every file under a folder (hidden temporaries included), and a
training run killed once its log reaches a step."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a launcher may start its workers from another thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> set[int]:
    found, todo = set(), children(pid)
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo += children(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def still_running(pids, seconds: float = 10.0) -> list[int]:
    """Those of `pids` still running after up to `seconds`: a SIGKILLed process is not gone at once
    (under load the kernel takes a while to tear it down), so a kill test waits a bounded time before
    it calls a process one that outlived its kill."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` by relative path; a leftover temporary shows as an extra key."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def last_logged_step(log_path: Path) -> int:
    """The highest step in a training log being written (0 before its first line; a line cut mid-write
    is skipped)."""
    steps = []
    for line in log_path.read_text().splitlines() if log_path.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written
    return max(steps, default=0)


def kill_once_logged(cmd: list[str], env: dict, cwd: Path, log_path: Path, step: int, delay_s: float,
                     timeout_s: float = 300) -> int:
    """Run `cmd`, SIGKILL it `delay_s` after its training log reaches `step`; its exit status
    (-SIGKILL, or 0 when it finished first; anything else fails with its stderr's tail)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + timeout_s
    while last_logged_step(log_path) < step and proc.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.01)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode in (-signal.SIGKILL, 0), err[-3000:]
    return proc.returncode
