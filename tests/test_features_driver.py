"""Feature driver: Ray actors vs the sequential executor, resume after a kill, bad scenes recorded
and reported, and the CLI's exit status. Tiny models, toy scenes, a local Ray runtime."""

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.features import store
from pipeline.features.driver import run_features
from pipeline.features.scenes import InMemoryScenes, open_workflow_source
from pipeline.toy.scenes import ToyRenderedScenes
from schemas.config_features import EncoderConfig, FeaturesConfig
from schemas.workflow import ToyWorldConfig, load_workflow

ROOT = Path(__file__).resolve().parents[1]
CFG = FeaturesConfig(num_frames=4, image_size=(112, 140), encoder=EncoderConfig(model="toy:qwen2_5_vl"),
                     num_actors=2, max_in_flight=1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from pipeline.models.resolve import resolve_model

    root = tmp_path_factory.mktemp("data")
    resolve_model("toy:qwen2_5_vl", root)  # built once here, not in every worker
    return root


@pytest.fixture(scope="module")
def scenes():
    toy = ToyRenderedScenes(ToyWorldConfig(num_scenes=2, frames=8, seed=1), num_frames=4)
    good = [toy.load_scene(s) for s in toy.scene_ids()]
    base = good[0]
    bad = [
        replace(base, scene_id="no_masks", instances_FHW=np.full_like(base.instances_FHW, -1)),
        replace(base, scene_id="nan_geometry", depth_FHdWd=np.full_like(base.depth_FHdWd, np.nan)),
        replace(base, scene_id="corrupt_frame", images_FHW3=base.images_FHW3[..., :2]),
    ]
    return good, bad


def test_ray_and_local_agree_and_failures_are_recorded(ray_runtime, scenes, data_root, tmp_path):
    good, bad = scenes
    provider = InMemoryScenes.of(good + bad)
    report = run_features(CFG, tmp_path / "ray", data_root, provider, executor="ray")
    assert sorted(report.done) == sorted(s.scene_id for s in good)
    assert set(report.failed) == {"no_masks", "nan_geometry", "corrupt_frame"}
    assert "no mask" in report.failed["no_masks"]
    assert "invalid" in report.failed["nan_geometry"]
    assert "uint8 F x H x W x 3" in report.failed["corrupt_frame"]
    run = json.loads(report.path.read_text())
    assert report.path.parent == tmp_path / "ray" / "features" / "_runs"
    assert sorted(run["done"]) == sorted(report.done)
    assert {f["scene_id"] for f in run["failed"]} == set(report.failed)
    assert run["config"]["num_frames"] == 4 and run["seconds_per_step"]["encoder"] > 0
    assert store.list_scenes(tmp_path / "ray", complete_only=False) == sorted(report.done)

    local = run_features(CFG, tmp_path / "local", data_root, InMemoryScenes.of(good), executor="local")
    assert sorted(local.done) == sorted(report.done)
    for scene in good:
        a = store.read_scene(tmp_path / "ray", scene.scene_id)
        b = store.read_scene(tmp_path / "local", scene.scene_id)
        for name in ("feat_FhwD", "xyz_Fhw3", "label_Fhw", "pose_F44", "intrinsics_F33"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))

    again = run_features(CFG, tmp_path / "ray", data_root, provider, executor="ray")
    assert sorted(again.skipped) == sorted(report.done) and not again.done
    assert set(again.failed) == set(report.failed)


def _toy_workflow(tmp_path: Path, num_scenes: int) -> Path:
    from pipeline.toy.world import build_toy_world

    world = tmp_path / "world"
    build_toy_world(world, world / "scenes", ToyWorldConfig(num_scenes=num_scenes, frames=4, seed=2),
                    progress=lambda _msg: None)
    wf = {
        "name": "toy-test", "out": str(tmp_path / "out"),
        "source": {"kind": "toy", "path": str(world / "scenes"),
                   "toy": {"num_scenes": num_scenes, "frames": 4, "seed": 2}},
        "features": {"num_frames": 4, "image_size": [112, 140], "encoder": {"model": "toy:qwen2_5_vl"}},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    wf_path = _toy_workflow(tmp_path, num_scenes=5)
    wf = load_workflow(wf_path)
    out = Path(wf.out)
    proc = subprocess.Popen([sys.executable, "-m", "p3d.cli", "features", "--workflow", str(wf_path),
                             "--executor", "local"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not store.list_scenes(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = store.list_scenes(out)
    assert finished, "the run should have finished at least one scene before the kill"
    # Whatever the kill interrupted, nothing that claims to be complete is broken.
    for scene_id in store.list_scenes(out, complete_only=False):
        if store.is_complete(out, scene_id):
            triplets = store.read_scene(out, scene_id)
            assert triplets.feat_FhwD.shape == (4, 4, 5, 128) and triplets.attrs.complete
    # A group interrupted before its marker (as a kill inside zarr would leave) must be redone.
    import zarr

    ids = open_workflow_source(wf, 4).scene_ids()
    unfinished = next((s for s in ids if s not in finished), ids[-1])
    finished = [s for s in finished if s != unfinished]
    shutil.rmtree(store.scene_path(out, unfinished), ignore_errors=True)
    zarr.open_group(str(store.scene_path(out, unfinished)), mode="w", zarr_format=3).create_array(
        "feat", shape=(1,), dtype="float16")

    report = run_features(wf.features, out, out, open_workflow_source(wf, 4), executor="local")
    assert set(finished) <= set(report.skipped)
    assert unfinished in report.done and not report.failed
    assert store.list_scenes(out) == sorted(ids)


def test_cli_exits_nonzero_naming_a_corrupt_frame(tmp_path):
    from typer.testing import CliRunner

    from p3d.cli import app

    wf_path = _toy_workflow(tmp_path, num_scenes=2)
    bad_jpg = tmp_path / "world" / "scenes" / "toy0001" / "color" / "2.jpg"
    bad_jpg.write_bytes(bad_jpg.read_bytes()[:64])  # a truncated JPEG
    result = CliRunner().invoke(app, ["features", "--workflow", str(wf_path), "--executor", "local"])
    assert result.exit_code == 1, result.output
    assert "FAILED toy0001" in result.output
    out = tmp_path / "out"
    assert store.list_scenes(out) == ["toy0000"]
    run = json.loads(sorted((out / "features" / "_runs").glob("*.json"))[-1].read_text())
    assert run["done"] == ["toy0000"] and run["failed"][0]["scene_id"] == "toy0001"


def test_complete_scene_made_with_another_config_is_redone(scenes, data_root, tmp_path):
    """Resume skips a complete group only when it was made with the same feature config."""
    from pipeline.features.stage import config_hash

    good, _ = scenes
    provider = InMemoryScenes.of(good[:1])
    scene_id = good[0].scene_id
    first = run_features(CFG, tmp_path, data_root, provider, executor="local")
    assert first.done == [scene_id]
    assert store.open_group(tmp_path, scene_id).attrs["config_hash"] == config_hash(CFG)
    # The executor is the config's (the call names none) and how a run executes is no part of a
    # group's identity: another executor keeps the group.
    again = run_features(CFG.model_copy(update={"executor": "local"}), tmp_path, data_root, provider)
    assert again.skipped == [scene_id] and not again.done and again.executor == "local"
    smaller = CFG.model_copy(update={"image_size": (56, 84)})
    redone = run_features(smaller, tmp_path, data_root, provider, executor="local")
    assert redone.done == [scene_id]
    assert store.read_scene(tmp_path, scene_id).attrs.grid == [2, 3]


def test_scenes_made_from_another_world_are_redone(tmp_path):
    """Resume keys on the source: the same `out` pointed at another toy world (another seed) redoes
    every scene, and a scene whose input files changed is redone alone."""
    import os

    from typer.testing import CliRunner

    from p3d.cli import app

    def workflow(seed: int) -> Path:
        wf = {
            "name": "toy-test", "out": str(tmp_path / "out"),
            "source": {"kind": "toy", "path": str(tmp_path / "world" / "scenes"),
                       "toy": {"num_scenes": 2, "frames": 4, "seed": seed}},
            "features": {"num_frames": 4, "image_size": [112, 140], "encoder": {"model": "toy:qwen2_5_vl"}},
        }
        path = tmp_path / f"wf{seed}.yaml"
        path.write_text(yaml.safe_dump(wf))
        return path

    def features(seed: int) -> dict:
        result = CliRunner().invoke(app, ["features", "--workflow", str(workflow(seed)),
                                          "--executor", "local"])
        assert result.exit_code == 0, result.output
        return json.loads(sorted((tmp_path / "out" / "features" / "_runs").glob("*.json"))[-1].read_text())

    def objects(scene_id: str, where: Path) -> list[dict]:
        return json.loads((where / scene_id / "objects.json").read_text())

    out, scenes_dir = tmp_path / "out", tmp_path / "world" / "scenes"
    first = features(0)
    assert first["done"] == ["toy0000", "toy0001"]
    seed0 = {s: objects(s, scenes_dir) for s in first["done"]}
    second = features(1)  # the world is rendered again from seed 1; the store must follow it
    assert second["done"] == ["toy0000", "toy0001"] and not second["skipped"]
    for scene_id in second["done"]:
        stored = store.read_scene(out, scene_id).attrs.objects
        assert stored == objects(scene_id, scenes_dir) and stored != seed0[scene_id]
    assert features(1)["skipped"] == ["toy0000", "toy0001"]
    pose = scenes_dir / "toy0001" / "pose" / "0.txt"
    os.utime(pose, ns=(pose.stat().st_atime_ns, pose.stat().st_mtime_ns + 10**9))
    third = features(1)
    assert third["done"] == ["toy0001"] and third["skipped"] == ["toy0000"]
