"""Feature-stage benchmark on the toy world with tiny models, all figures measured in one run.

1. Throughput: the Ray driver (N actors) against a plain sequential loop over the same models
   (load scene -> process -> write), scenes per minute and seconds per model.
2. Cross-frame identity: the 3D-overlap merge (what the `sam2` segmenter does after its per-frame
   masks) fed with the toy world's per-frame GT masks whose ids were scrambled in every frame, so
   only the merge can recover identity; against the no-merge baseline (every frame's masks are
   new objects). Purity (pixel-weighted share of a predicted id's pixels on its majority GT object)
   and fragments (predicted ids per GT object) against the GT instances.
3. The tiny random-weight SAM 2 through the whole `sam2` path: its label purity against GT (a
   plumbing figure: an untrained model's masks mean nothing).

    python benchmarks/features.py --scenes 6 --frames 16 --actors 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def purity_and_fragments(pred_FHW: np.ndarray, gt_FHW: np.ndarray) -> tuple[float, float]:
    """Over pixels labelled in both: pixel-weighted purity of predicted ids, mean predicted ids per GT id."""
    both = (pred_FHW >= 0) & (gt_FHW >= 0)
    pred, gt = pred_FHW[both].astype(np.int64), gt_FHW[both].astype(np.int64)
    if len(pred) == 0:
        return float("nan"), float("nan")
    pairs, counts = np.unique(np.stack([pred, gt]), axis=1, return_counts=True)
    majority = {}
    for (p, _g), c in zip(pairs.T, counts):
        majority[p] = max(majority.get(p, 0), c)
    purity = sum(majority.values()) / len(pred)
    # A predicted id counts as a fragment of the GT object it mostly covers.
    owner = {}
    for (p, g), c in zip(pairs.T, counts):
        if c == majority[p]:
            owner.setdefault(p, g)
    per_gt = {}
    for p, g in owner.items():
        per_gt[g] = per_gt.get(g, 0) + 1
    return float(purity), float(np.mean(list(per_gt.values())))


def scramble_per_frame(gt_FHW: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.full_like(gt_FHW, -1)
    for f in range(len(gt_FHW)):
        ids = np.unique(gt_FHW[f][gt_FHW[f] >= 0])
        new = rng.permutation(len(ids)) + 1000 * f
        for old, n in zip(ids, new):
            out[f][gt_FHW[f] == old] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 308))
    args = parser.parse_args()

    from pipeline.features import store
    from pipeline.features.driver import FeatureWorker, run_features
    from pipeline.features.stage import prepare_frames
    from pipeline.models.mask_merge import merge_frames_3d
    from pipeline.models.rgbd import RGBDGeometry
    from pipeline.models.toy_models import resolve_model
    from pipeline.sources import open_source
    from pipeline.sources.toy import build_toy_world
    from schemas.config_features import EncoderConfig, FeaturesConfig, SegmenterConfig
    from schemas.workflow import SourceConfig, ToyWorldConfig

    work = Path(tempfile.mkdtemp(prefix="p3d-bench-features-"))
    world = work / "world"
    t0 = time.perf_counter()
    build_toy_world(world, world / "scenes", ToyWorldConfig(num_scenes=args.scenes, frames=args.frames, seed=0),
                    progress=lambda _m: None)
    print(f"toy world: {args.scenes} scenes x {args.frames} frames rendered in {time.perf_counter() - t0:.1f}s")
    source = open_source(SourceConfig(kind="toy", path=str(world / "scenes")), num_frames=args.frames)
    ids = source.scene_ids()
    cfg = FeaturesConfig(num_frames=args.frames, image_size=tuple(args.image_size),
                         encoder=EncoderConfig(model="toy:qwen2_5_vl"), num_actors=args.actors)
    resolve_model("toy:qwen2_5_vl", world)

    # 1. Sequential loop over the same worker code, then the Ray driver.
    t0 = time.perf_counter()
    worker = FeatureWorker(cfg, str(work / "seq"), str(world), source, device="cpu")
    setup_seq = time.perf_counter() - t0
    steps_seq: dict[str, float] = {}
    t0 = time.perf_counter()
    for scene_id in ids:
        outcome = worker.process(scene_id)
        assert outcome.status == "done", outcome.reason
        for k, v in outcome.seconds.items():
            steps_seq[k] = steps_seq.get(k, 0.0) + v
    loop_seq = time.perf_counter() - t0

    report = run_features(cfg, work / "ray", world, source, executor="ray")
    assert report.ok, report.failed
    loop_ray = report.wall_seconds - report.setup_seconds - report.startup_seconds

    print(f"\nthroughput ({len(ids)} scenes, {args.frames} frames, {args.image_size[0]}x{args.image_size[1]} px, "
          f"{os.cpu_count()} CPUs)")
    print(f"{'':24s}{'sequential':>12s}{'ray x' + str(args.actors):>12s}")
    print(f"{'ray.init s':24s}{0.0:12.2f}{report.startup_seconds:12.2f}")
    print(f"{'model setup s':24s}{setup_seq:12.2f}{report.setup_seconds:12.2f}")
    print(f"{'scenes / min (loop)':24s}{60 * len(ids) / loop_seq:12.1f}{60 * len(ids) / max(loop_ray, 1e-9):12.1f}")
    print(f"{'scenes / min (wall)':24s}{60 * len(ids) / (loop_seq + setup_seq):12.1f}"
          f"{60 * len(ids) / report.wall_seconds:12.1f}")
    for step in ("load", "prepare", "encoder", "geometry", "segmenter", "patchify", "write"):
        print(f"{step + ' s/scene':24s}{steps_seq.get(step, 0) / len(ids):12.3f}"
              f"{report.seconds_per_step.get(step, 0) / len(ids):12.3f}")

    # 2. The 3D-overlap merge against GT identities (scrambled per frame), and the no-merge baseline.
    rng = np.random.default_rng(0)
    geometry = RGBDGeometry()
    rows = {"no merge (per-frame ids)": [], "overlap3d merge": []}
    for scene_id in ids:
        scene = source.load_scene(scene_id)
        images, sensor, _ = prepare_frames(scene, cfg)
        xyz = geometry.predict(images, sensor).xyz_FHW3
        scrambled = scramble_per_frame(sensor.instances_FHW, rng)
        rows["no merge (per-frame ids)"].append(purity_and_fragments(scrambled, sensor.instances_FHW))
        merged = merge_frames_3d(scrambled, xyz, voxel=0.05, min_overlap=0.3)
        rows["overlap3d merge"].append(purity_and_fragments(merged, sensor.instances_FHW))
    print("\ncross-frame identity from per-frame GT masks (ids scrambled per frame), mean over scenes")
    print(f"{'':28s}{'purity':>10s}{'ids per GT object':>20s}")
    for name, values in rows.items():
        arr = np.array(values)
        print(f"{name:28s}{arr[:, 0].mean():10.3f}{arr[:, 1].mean():20.2f}")

    # 3. Tiny random SAM 2 through the sam2 path (plumbing; untrained masks).
    sam_cfg = cfg.model_copy(update={"segmenter": SegmenterConfig(
        kind="sam2", model="toy:sam2", points_per_side=8, pred_iou_thresh=0.0, stability_thresh=0.0,
        min_mask_area=0.002)})
    sam_report = run_features(sam_cfg, work / "sam2", world, source, executor="local")
    purities = []
    for scene_id in sam_report.done:
        scene = source.load_scene(scene_id)
        _, sensor, _ = prepare_frames(scene, cfg)
        triplets = store.read_scene(work / "sam2", scene_id)
        gt_patch = _patch_majority(sensor.instances_FHW, triplets.attrs.patch_size)
        purities.append(purity_and_fragments(triplets.label_Fhw, gt_patch))
    arr = np.array(purities) if purities else np.full((1, 2), np.nan)
    print(f"\ntiny random SAM 2 + overlap3d, patch labels vs GT patch labels: purity {np.nanmean(arr[:, 0]):.3f}, "
          f"ids per GT object {np.nanmean(arr[:, 1]):.2f}, segmenter {sam_report.seconds_per_step.get('segmenter', 0) / max(len(ids), 1):.2f} s/scene, "
          f"{len(sam_report.failed)} scenes failed")
    print(f"(outputs under {work})")


def _patch_majority(labels_FHW: np.ndarray, patch: int) -> np.ndarray:
    from pipeline.features.patchify import patchify

    dummy = np.zeros((*labels_FHW.shape, 3), np.float32)
    return patchify(labels_FHW, dummy, np.ones(labels_FHW.shape, np.float32), patch)[0]


if __name__ == "__main__":
    main()
