"""The real networks' path in CI: two toy scenes exported as ScanNet scenes (.sens, axis alignment,
annotation files, 2d-instance-filt.zip) go through `p3d features` on Ray with the tiny random
`toy:` Qwen2.5-VL, a random VGGT and the tiny SAM 2 together, then `p3d cluster`, one training
step per stage and `p3d predict`, all as the commands a user types. Random weights give
meaningless geometry and masks: the test checks the plumbing and every contract on the way
(shapes, finite values, the world alignment and the instance matching recorded), not the quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 4
IMAGE_HW = (112, 140)


def _run(*argv: str, cwd: Path = ROOT) -> str:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def real_path(tmp_path_factory):
    from pipeline.models.vggt.config import VGGTConfig
    from pipeline.models.vggt.loader import random_vggt, save_vggt
    from pipeline.sources.scannet_export import export_scannet_scene
    from pipeline.toy.source import ToySource
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig

    root = tmp_path_factory.mktemp("realpath")
    data = root / "data"
    build_toy_world(data, data / "toy_scenes", ToyWorldConfig(num_scenes=2, frames=8, seed=4, image_size=(120, 160)),
                    progress=lambda _: None, workers=1)
    toy = ToySource(path=str(data / "toy_scenes"), num_frames=8)
    align_44 = np.eye(4)
    c, s = np.cos(0.4), np.sin(0.4)
    align_44[:2, :2] = [[c, -s], [s, c]]
    align_44[:3, 3] = [1.5, -0.5, 0.1]
    scenes = {}
    for scene_id in toy.available():
        scene = toy.load_scene(scene_id)
        scenes[scene_id] = scene
        export_scannet_scene(scene, root / "scans", align_44)
    vggt = save_vggt(random_vggt(VGGTConfig.tiny(embed_dim=32, depth=2, num_heads=2), seed=3), root / "vggt", toy=True)
    records = data / "annotations.jsonl"
    wf = {
        "name": "realpath", "out": str(data),
        "source": {"kind": "scannet", "path": str(root / "scans")},
        "features": {"num_frames": FRAMES, "image_size": list(IMAGE_HW),
                     "encoder": {"model": "toy:qwen2_5_vl"},
                     "geometry": {"kind": "vggt", "model": str(vggt)},
                     "segmenter": {"kind": "sam2", "model": "toy:sam2", "points_per_side": 4,
                                   "pred_iou_thresh": 0.0, "stability_thresh": 0.0, "min_mask_area": 0.0},
                     "num_actors": 2, "max_in_flight": 1},
        "cluster": {"name": "smoke", "proxies": 24, "scenes_per_shard": 1},
        "train": {"model": "toy:qwen2_5_vl", "proxies": "smoke", "records": str(records),
                  "out": str(root / "train"), "num_obj_tokens": 32,
                  "stages": [
                      {"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": 1,
                       "batch_size": 2, "record_tasks": ["grounding"]},
                      {"stage": 4, "trainable": ["projector", "position", "identifiers", "language_model"],
                       "max_steps": 1, "batch_size": 2, "init_from": str(root / "train" / "stage1" / "model"),
                       "tasks": ["grounding", "caption", "object_name"]},
                  ]},
    }
    wf_path = root / "realpath.yaml"
    wf_path.write_text(yaml.safe_dump(wf))
    return root, data, wf_path, scenes, align_44


def test_real_networks_features_cluster_train_predict(real_path):
    from pipeline.cluster.shards import load_scene_proxies
    from pipeline.features.store import list_scenes, read_scene
    from schemas.record import load_records

    root, data, wf_path, scenes, _ = real_path

    _run("-m", "p3d.cli", "features", "--workflow", str(wf_path), "--executor", "ray")
    assert list_scenes(data, complete_only=True) == sorted(scenes)
    for scene_id, scene in scenes.items():
        stored = read_scene(data, scene_id)
        attrs = stored.attrs
        assert attrs.format_version == 2
        assert (attrs.encoder.model, attrs.geometry.kind, attrs.segmenter.kind) == ("toy:qwen2_5_vl", "vggt", "sam2")
        assert not (attrs.encoder.trained or attrs.geometry.trained or attrs.segmenter.trained)
        num, (h, w) = FRAMES, (IMAGE_HW[0] // 28, IMAGE_HW[1] // 28)
        assert stored.feat_FhwD.shape[:3] == (num, h, w) and np.isfinite(stored.feat_FhwD).all()
        assert stored.xyz_Fhw3.shape == (num, h, w, 3) and stored.label_Fhw.shape == (num, h, w)
        valid = np.isfinite(stored.xyz_Fhw3).all(-1)
        assert valid.any() and (stored.label_Fhw >= 0).any()
        # The alignment: fitted to the sensor poses, recorded as a 4x4 similarity with its scale.
        align = attrs.alignment
        assert align is not None and align.method == "sensor_poses" and align.num_frames == num
        sim_44 = np.asarray(align.similarity)
        assert sim_44.shape == (4, 4) and np.isfinite(sim_44).all()
        rot_33 = sim_44[:3, :3] / align.scale
        np.testing.assert_allclose(rot_33 @ rot_33.T, np.eye(3), atol=1e-5)
        assert align.residual_m is not None and np.isfinite(align.residual_m)
        # The stored poses are the aligned ones: their centres are fitted to the sensor's (residual).
        sensor_centres = scene.poses_F44[np.asarray(attrs.frame_indices), :3, 3]
        stored_centres = np.asarray(stored_pose(data, scene_id))[:, :3, 3]
        rms = np.sqrt(((stored_centres - sensor_centres) ** 2).sum(-1).mean())
        assert rms == pytest.approx(align.residual_m, rel=1e-3, abs=1e-4)
        # The ground truth beside the prediction: gt_label holds the exported scene's object ids.
        assert stored.gt_label_Fhw is not None
        assert set(np.unique(stored.gt_label_Fhw)) <= {o.id for o in scene.objects} | {-1}

    _run("-m", "p3d.cli", "cluster", "--workflow", str(wf_path))
    for scene_id, scene in scenes.items():
        sample = load_scene_proxies(data, "smoke", scene_id)
        assert sample["feat"].shape[0] == sample["xyz"].shape[0] == 24
        assert np.isfinite(sample["xyz"]).all()
        assert sample["meta"].format_version == 2
        categories = {o.id: o.category for o in scene.objects}
        segments = [seg.model_dump() for seg in sample["segments"]]
        assert segments and all("instance_id" in seg and "match_iou" in seg for seg in segments)
        for seg in segments:
            if seg["instance_id"] is not None:  # a match names a real object and takes its category
                assert seg["category"] == categories[seg["instance_id"]] and seg["match_iou"] >= 0.25
            else:
                assert seg["category"] is None

    _run(str(ROOT / "trainer" / "run.py"), "--stage", "1", "--workflow", str(wf_path))
    _run(str(ROOT / "trainer" / "run.py"), "--stage", "4", "--workflow", str(wf_path))
    checkpoint = root / "train" / "stage4" / "model"
    preds_path = root / "preds.jsonl"
    _run("-m", "p3d.cli", "predict", "--checkpoint", str(checkpoint),
         "--shards", str(data / "proxies" / "smoke"), "--records", str(data / "annotations.jsonl"),
         "--out", str(preds_path), "--split", "all", "--max-new-tokens", "4", "--limit", "12")
    preds = [json.loads(line) for line in preds_path.read_text().splitlines()]
    assert preds
    known = {r.id: r for r in load_records(data / "annotations.jsonl")}
    for pred in preds:
        assert pred["id"] in known and pred["scene_id"] in scenes
        object_ids = {o.id for o in scenes[pred["scene_id"]].objects}
        # Predicted instance ids come from the matching: a real object id or null, never a mask id.
        assert set(pred.get("instance_ids") or []) <= object_ids | {None}


def stored_pose(out: Path, scene_id: str) -> np.ndarray:
    from pipeline.features.store import open_group

    return np.asarray(open_group(out, scene_id)["pose"][:])
