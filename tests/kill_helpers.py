"""What the SIGKILL tests (tests/test_kill_*.py) share: the processes a command started, whether
one is still running, and a digest of every file under a folder (hidden temporaries included)."""

from __future__ import annotations

import hashlib
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


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` by relative path; a leftover temporary shows as an extra key."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
