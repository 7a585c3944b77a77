"""schemas/io.py: atomic writes and the build-once lock that concurrent workers share."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from schemas.io import atomic_dir, build_once


def _slow_build(folder: Path) -> None:
    # Log every build in a file beside the folder, then take long enough that the other processes
    # arrive while it is still building.
    with (folder.parent / "builds.log").open("a") as log:
        log.write("build\n")
    with atomic_dir(folder) as tmp:
        time.sleep(0.5)
        (tmp / "weights").write_text("w")
        (tmp / "done").write_text("")


def _ask(folder: str, start_at: float) -> bool:
    time.sleep(max(0.0, start_at - time.time()))
    out = build_once(folder, "done", _slow_build)
    return (out / "weights").read_text() == "w"


def test_concurrent_callers_build_a_folder_once_and_all_find_it(tmp_path):
    folder = tmp_path / "models" / "toy"
    start_at = time.time() + 1.0
    with mp.get_context("spawn").Pool(4) as pool:
        found = pool.starmap(_ask, [(str(folder), start_at)] * 4)
    assert found == [True] * 4
    assert (tmp_path / "models" / "builds.log").read_text().count("build") == 1
    # Built already: no lock taken, no rebuild.
    assert build_once(folder, "done", lambda f: pytest.fail("rebuilt a built folder")) == folder


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds(tmp_path):
    folder = tmp_path / "m"

    def broken(f: Path) -> None:
        with atomic_dir(f) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(folder, "done", broken)
    assert not folder.exists() and [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    build_once(folder, "done", _slow_build)
    assert (folder / "weights").read_text() == "w"
