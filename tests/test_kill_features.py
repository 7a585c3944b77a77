"""`p3d features` killed by SIGKILL at random points several times (while starting and building the
toy encoder, and after each finished scene), then run again: every scene's arrays equal an
uninterrupted run's byte for byte. (tests/test_features_driver.py kills once, after a first scene.)"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.features import store
from tests.test_features_driver import _toy_workflow

ROOT = Path(__file__).resolve().parents[1]
NUM_SCENES = 3
ARRAYS = ("feat_FhwD", "xyz_Fhw3", "label_Fhw", "conf_Fhw", "pose_F44", "intrinsics_F33", "gt_label_Fhw")


def _features(wf: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    return subprocess.Popen([sys.executable, "-m", "p3d.cli", "features", "--workflow", str(wf),
                             "--executor", "local"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_features_killed_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    from schemas.workflow import load_workflow

    reference_wf = _toy_workflow(tmp_path / "reference", NUM_SCENES)
    proc = _features(reference_wf)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]

    wf = _toy_workflow(tmp_path / "killed", NUM_SCENES)
    out = Path(load_workflow(wf).out)
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    codes = []
    for scenes_done in range(NUM_SCENES):  # kill i comes a random moment after i scenes are complete
        proc = _features(wf)
        deadline = time.monotonic() + 600
        while len(store.list_scenes(out)) < scenes_done and proc.poll() is None:
            assert time.monotonic() < deadline, "features made no progress"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        codes.append(proc.wait())
        proc.stderr.close()
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"

    proc = _features(wf)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    reference_out = Path(load_workflow(reference_wf).out)
    assert store.list_scenes(out) == store.list_scenes(reference_out)
    assert len(store.list_scenes(out)) == NUM_SCENES
    for scene_id in store.list_scenes(out):
        a, b = store.read_scene(reference_out, scene_id), store.read_scene(out, scene_id)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=f"{scene_id} {name}")
