"""`p3d toy` killed by SIGKILL at random points, several times, over an older world, then run again:
the world on disk equals an uninterrupted run's byte for byte (no temporary left behind), a killed
render never says it is complete, and no rendering worker outlives the command."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kill_helpers import descendants, still_running, tree_digest

ROOT = Path(__file__).resolve().parents[1]
NUM_SCENES = 6
ARGS = ["--scenes", str(NUM_SCENES), "--frames", "6", "--seed", "3", "--workers", "2"]
KILLS = 3


def _start(out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    return subprocess.Popen([sys.executable, "-m", "p3d.cli", "toy", "--out", str(out), *ARGS], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after(proc: subprocess.Popen, scenes_done: int, delay: float) -> set[int]:
    """SIGKILL `proc` `delay` seconds after it reports `scenes_done` scenes (0: its first line);
    returns the processes it had started."""
    wanted = f"[{scenes_done}/{NUM_SCENES}]" if scenes_done else "toy world:"
    for line in proc.stdout:
        if wanted in line:
            break
    time.sleep(delay)
    workers = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return workers


@pytest.mark.slow
def test_toy_world_killed_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig

    reference = _start(tmp_path / "reference")
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]

    # The killed runs replace an older world (another seed, one scene more): kills land on old data.
    killed = tmp_path / "killed"
    build_toy_world(killed, killed / "scenes", ToyWorldConfig(num_scenes=NUM_SCENES + 1, frames=6, seed=9),
                    progress=lambda _m: None, workers=1)
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    num_killed = 0
    for _ in range(KILLS):
        proc = _start(killed)
        workers = _kill_after(proc, rng.randrange(NUM_SCENES), rng.uniform(0.0, 0.5))
        if proc.returncode != -signal.SIGKILL:
            continue  # it finished first
        num_killed += 1
        assert not still_running(workers), "a rendering worker outlived the killed command"
        # A kill after the last write (the command still exiting) meets a finished world: that one
        # must then be the uninterrupted run's; any earlier kill leaves the world marked unfinished.
        if json.loads((killed / "toy_world.json").read_text())["complete"]:
            assert tree_digest(killed) == tree_digest(tmp_path / "reference")
    assert num_killed, "every run finished before its kill: the test tested nothing"

    rerun = _start(killed)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert tree_digest(killed) == tree_digest(tmp_path / "reference")


def test_an_interrupted_world_is_rendered_again_by_features(tmp_path):
    """What a killed render leaves (toy_world.json with complete: false) is redone, even with the
    workflow's own config; a finished world of that config is kept."""
    from pipeline.sources import prepare_source
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig, Workflow

    cfg = ToyWorldConfig(num_scenes=1, frames=4, seed=4, image_size=(96, 128))
    world = tmp_path / "world"
    build_toy_world(world, world / "scenes", cfg, progress=lambda _m: None, workers=1)
    source = {"kind": "toy", "path": str(world / "scenes"), "toy": cfg.model_dump()}
    wf = Workflow.model_validate({"name": "t", "out": str(tmp_path / "out"), "source": source})
    messages: list[str] = []
    assert prepare_source(wf.source, echo=messages.append) is False
    info = json.loads((world / "toy_world.json").read_text())
    (world / "toy_world.json").write_text(json.dumps({**info, "complete": False}))
    assert prepare_source(wf.source, echo=messages.append) is True
    assert "was not finished" in messages[0]
    assert json.loads((world / "toy_world.json").read_text())["complete"] is True


def test_a_world_of_another_generator_version_is_rendered_again(tmp_path):
    """A world rendered by another TOY_WORLD_VERSION (its records lack what this one writes, e.g.
    target_names) is rendered again with the same config; a world without provenance is kept."""
    from pipeline.sources import prepare_source
    from pipeline.toy.world import TOY_WORLD_VERSION, build_toy_world
    from schemas.record import load_records
    from schemas.workflow import ToyWorldConfig, Workflow

    cfg = ToyWorldConfig(num_scenes=1, frames=4, seed=4, image_size=(96, 128))
    world = tmp_path / "world"
    build_toy_world(world, world / "scenes", cfg, progress=lambda _m: None, workers=1)
    source = {"kind": "toy", "path": str(world / "scenes"), "toy": cfg.model_dump()}
    wf = Workflow.model_validate({"name": "t", "out": str(tmp_path / "out"), "source": source})
    info = json.loads((world / "toy_world.json").read_text())
    (world / "toy_world.json").write_text(json.dumps({**info, "version": TOY_WORLD_VERSION - 1}))
    messages: list[str] = []
    assert prepare_source(wf.source, echo=messages.append) is True
    assert f"version {TOY_WORLD_VERSION - 1}, not {TOY_WORLD_VERSION}" in messages[0]
    assert json.loads((world / "toy_world.json").read_text())["version"] == TOY_WORLD_VERSION
    assert any(r.target_names for r in load_records(world / "annotations.jsonl"))
    (world / "toy_world.json").unlink()
    assert prepare_source(wf.source, echo=messages.append) is False
