"""Atomic file writes shared by every stage: write a temporary sibling, fsync, rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel


@contextmanager
def atomic_open(path: str | Path):
    """Yield a text file whose content replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any, default: Callable | None = None) -> Path:
    with atomic_open(path) as f:
        json.dump(data, f, indent=1, default=default)
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


@contextmanager
def atomic_dir(folder: str | Path):
    """Yield a temporary sibling folder to fill; it replaces `folder` only if the block finishes."""
    import shutil
    import uuid

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
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
