"""`p3d cluster` re-clustering a set under the same name, killed by SIGKILL at random points several
times: after every kill the set is either refused by the loader (no index.json) or whole and of one
budget, never a mix; the rerun's shards and index equal an uninterrupted run's byte for byte (the
tars are deterministic), with no temporary left behind. (tests/test_cluster_driver.py kills once, at
a chosen point.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster.driver import run_cluster
from pipeline.cluster.shards import proxies_dir
from tests.synthetic_triplets import store_arrays, synthetic_scene
from pipeline.features.store import write_scene
from schemas.config_cluster import ClusterConfig
from schemas.proxy import INDEX_FILE
from schemas.store import ModelRef, StoreAttrs
from tests.kill_helpers import tree_digest

ROOT = Path(__file__).resolve().parents[1]
NUM_SCENES = 8
KILLS = 3


def _store(out: Path) -> None:
    ref = ModelRef(kind="synthetic", trained=False)
    for i in range(NUM_SCENES):
        scene = synthetic_scene(num_frames=6, h=8, w=10, dim=16, num_objects=10, seed=i)
        attrs = StoreAttrs(scene_id=f"scene{i:02d}", source={"kind": "synthetic"}, encoder=ref, geometry=ref,
                           segmenter=ref, frame_indices=list(range(6)), image_size=[224, 280], patch_size=28,
                           grid=[8, 10], objects=scene.objects, pipeline_version="test")
        write_scene(out, attrs, store_arrays(scene))


def _set_files(out: Path) -> dict[str, str]:
    """The set's files but its run reports (they carry timestamps), with the resolved config's one
    field that names the data root left out."""
    files = {k: v for k, v in tree_digest(proxies_dir(out, "set")).items() if not k.startswith("_runs/")}
    config = json.loads((proxies_dir(out, "set") / "config.json").read_text())
    files["config.json"] = json.dumps({k: v for k, v in config.items() if k != "out"}, sort_keys=True)
    return files


def _budgets_if_indexed(out: Path) -> set[int] | None:
    """Proxies per scene over the set as the loader reads it; None when the loader refuses it."""
    from trainer.shard_reader import iter_scenes

    try:
        return {len(s["xyz"]) for s in iter_scenes(proxies_dir(out, "set"), shuffle=False)}
    except ValueError:
        assert not (proxies_dir(out, "set") / INDEX_FILE).exists(), "an indexed set was refused"
        return None


@pytest.mark.slow
def test_recluster_killed_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _store(reference)
    shutil.copytree(reference, killed)
    new = ClusterConfig(name="set", proxies=20, scenes_per_shard=1, executor="local")
    assert not run_cluster(reference, new).failed
    run_cluster(killed, new.model_copy(update={"proxies": 40}))  # the older set of the same name

    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    cmd = [sys.executable, "-m", "p3d.cli", "cluster", "--out", str(killed), "--name", "set",
           "--proxies", "20", "--scenes-per-shard", "1", "--executor", "local"]
    index = proxies_dir(killed, "set") / INDEX_FILE
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    codes = []
    for _ in range(KILLS):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while index.exists() and proc.poll() is None:  # the run removes the index before it writes
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        codes.append(proc.wait())
        assert _budgets_if_indexed(killed) in (None, {20}), "a killed run left a mixed set the loader reads"
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"

    assert not run_cluster(killed, new).failed
    assert _set_files(killed) == _set_files(reference)
