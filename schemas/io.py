"""Atomic file writes shared by every stage: write a temporary sibling, fsync, rename. Folders are
replaced by `replace_dir` (rename the old aside, rename the new in, then delete the aside)."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def temporary_sibling(path: str | Path) -> Path:
    """Where this process writes `path` before renaming it into place (`.<name>.tmp-<pid>`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    """Running. A zombie is dead: a killed command's workers stay zombies where the container's PID 1
    reaps nothing (seen in CI), and their temporaries must still count as stale."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs: what kill(0) said
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> None:
    """Remove the temporary siblings (of `name`, else of anything) in `folder` whose writer is gone:
    a SIGKILL skips every cleanup, and nothing else would ever rename or delete them."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.glob(f".{glob.escape(name)}.tmp-*" if name is not None else ".*.tmp-*"):
        found = _TEMPORARY.match(entry.name)
        if found is None or _pid_alive(int(found["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Yield a file (text, or binary with mode "wb") whose content replaces `path` only if the block
    finishes. The temporaries of writers of `path` that were killed are removed first."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = temporary_sibling(path)
    try:
        with tmp.open(mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any, default: Callable | None = None,
                      sort_keys: bool = False) -> Path:
    """`sort_keys`: the same data gives the same bytes, whatever order its dicts were built in."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=1, default=default, sort_keys=sort_keys)
    return Path(path)


def write_jsonl_atomic(models: Iterable[BaseModel], path: str | Path, **dump_options) -> int:
    """One pydantic model per line; returns the number of lines."""
    n = 0
    f: IO[str]
    with atomic_open(path) as f:
        for m in models:
            f.write(m.model_dump_json(**dump_options) + "\n")
            n += 1
    return n


def aside_path(folder: str | Path) -> Path:
    """Where `replace_dir` keeps the old `folder` while the new one is renamed in."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.aside")


def recover_dir(folder: str | Path) -> None:
    """Finish a `replace_dir` that a kill interrupted: with `folder` missing, the aside is the old
    folder, whole, and goes back; with `folder` there, the new one is in place and the aside (maybe
    half deleted) goes."""
    import shutil

    folder = Path(folder)
    aside = aside_path(folder)
    if not aside.exists():
        return
    if folder.exists():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(aside, folder)


def replace_dir(new: str | Path, folder: str | Path) -> Path:
    """Put folder `new` at `folder` (same file system). The old folder is renamed aside, the new one
    renamed in, and only then is the aside deleted: a kill at any step leaves the old or the new
    folder whole, and `recover_dir` (called here first) tidies up after it."""
    import shutil

    new, folder = Path(new), Path(folder)
    recover_dir(folder)
    aside = aside_path(folder)
    if folder.exists():
        os.replace(folder, aside)
    os.replace(new, folder)
    shutil.rmtree(aside, ignore_errors=True)
    return folder


@contextmanager
def atomic_dir(folder: str | Path):
    """Yield a temporary sibling folder to fill; it replaces `folder` (`replace_dir`) only if the
    block finishes."""
    import shutil
    import uuid

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_once(folder: str | Path, marker: str, build: Callable[[Path], Any]) -> Path:
    """Return `folder`, calling `build(folder)` first unless `folder/marker` exists. Processes that
    start together (Ray actors, DeepSpeed ranks) all ask for the same model folder: a lock beside it
    lets the first one build while the others wait and then find it built, instead of each replacing
    the folder while another is already reading it."""
    from filelock import FileLock

    folder = Path(folder)
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(f".{folder.name}.lock"))):
        if not (folder / marker).exists():
            build(folder)
    return folder
