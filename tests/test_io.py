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


# ------------------------------------------------------------------ replace_dir at each kill point
def _folder(path: Path, tag: str) -> Path:
    path.mkdir(parents=True)
    for i in range(3):
        (path / f"f{i}.txt").write_text(f"{tag}{i}")
    (path / "sub").mkdir()
    (path / "sub" / "x.txt").write_text(tag)
    return path


def _which(path: Path) -> str | None:
    """'old' or 'new' when `path` holds that folder whole, None when it is missing; else fails."""
    if not path.exists():
        return None
    files = {p.relative_to(path).as_posix(): p.read_text() for p in path.rglob("*") if p.is_file()}
    for tag in ("old", "new"):
        if files == {"f0.txt": f"{tag}0", "f1.txt": f"{tag}1", "f2.txt": f"{tag}2", "sub/x.txt": tag}:
            return tag
    raise AssertionError(f"{path} is neither folder whole: {files}")


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", ["aside", "in", "delete_start", "delete_half", None])
def test_replace_dir_leaves_the_old_or_the_new_folder_whole_at_every_kill_point(tmp_path, monkeypatch,
                                                                                 kill_at):
    import os
    import shutil

    import schemas.io as io

    final, new = _folder(tmp_path / "scene", "old"), _folder(tmp_path / ".scene.tmp", "new")
    real_replace, real_rmtree = os.replace, shutil.rmtree
    calls = []

    def replace(src, dst):
        calls.append("aside" if Path(dst) == io.aside_path(final) else "in")
        if calls[-1] == kill_at:
            raise _Killed(kill_at)
        real_replace(src, dst)

    def rmtree(path, ignore_errors=False):
        if kill_at == "delete_start":
            raise _Killed(kill_at)
        if kill_at == "delete_half":  # a kill while deleting the aside: part of it is gone
            (Path(path) / "f0.txt").unlink()
            real_rmtree(Path(path) / "sub")
            raise _Killed(kill_at)
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(io.os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    try:
        io.replace_dir(new, final)
    except _Killed:
        pass
    monkeypatch.undo()
    # Right after the kill: the folder is the old or the new one, whole, or it is missing and the
    # aside holds the old one whole.
    state = _which(final)
    if state is None:
        assert _which(io.aside_path(final)) == "old"
    expected = {"aside": "old", "in": "old", "delete_start": "new", "delete_half": "new",
                None: "new"}[kill_at]
    io.recover_dir(final)  # what the next use does first
    assert _which(final) == expected
    assert not io.aside_path(final).exists()
    # And the next replacement works from there.
    io.replace_dir(_folder(tmp_path / ".scene.tmp2", "new"), final)
    assert _which(final) == "new" and not io.aside_path(final).exists()


def test_atomic_dir_replaces_through_replace_dir_and_a_failed_block_keeps_the_old(tmp_path):
    folder = _folder(tmp_path / "model", "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(folder) as tmp:
            (tmp / "partial").write_text("x")
            raise RuntimeError("killed inside the block")
    assert _which(folder) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with atomic_dir(folder) as tmp:
        for i in range(3):
            (tmp / f"f{i}.txt").write_text(f"new{i}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.txt").write_text("new")
    assert _which(folder) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
