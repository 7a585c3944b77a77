"""Feature-stage benchmark on the toy world with tiny models, all figures measured in one run.

1. Throughput: the Ray driver (N actors, scenes pipelined in each actor) against a plain
   sequential loop over the same models (load scene -> process -> write), and against the same
   actors in the naive order (one scene at a time per actor, max_in_flight 1). Start-up (ray.init)
   and model set-up are reported apart from the steady-state rate (scenes over the time after
   set-up), which is what a 1,513-scene run sees.
2. Cross-frame identity: the 3D-overlap merge (what the `sam2` segmenter does after its per-frame
   masks) fed with the toy world's per-frame GT masks whose ids were scrambled in every frame, so
   only the merge can recover identity; against the no-merge baseline (every frame's masks are
   new objects). Purity (pixel-weighted share of a predicted id's pixels on its majority GT object)
   and fragments (predicted ids per GT object) against the GT instances.
3. The tiny random-weight SAM 2 through the whole `sam2` path: its label purity against GT (a
   plumbing figure: an untrained model's masks mean nothing).
4. Where the model time goes, each against the naive order on the same frames: SAM 2 automatic
   masks batched across frames and prompts against the per-frame loop (the masks are checked equal),
   and SDPA against eager attention in SAM 2 and the Qwen2.5-VL vision tower.

    python benchmarks/features.py --scenes 24 --frames 16 --actors 2

Timings on a shared machine are noisy: compare the columns of one run, never runs with each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import best_of  # noqa: E402


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
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 308))
    parser.add_argument("--sam-points", type=int, default=8, help="SAM 2 prompt grid side in section 4")
    args = parser.parse_args()

    from pipeline.models.resolve import resolve_model
    from pipeline.sources import open_source
    from pipeline.toy.world import build_toy_world
    from schemas.config_features import EncoderConfig, FeaturesConfig
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

    _throughput(cfg, work, world, source, ids, args)
    _cross_frame_identity(cfg, source, ids)
    _tiny_sam2(cfg, work, world, source, ids)
    # 4. SAM 2 batched against per frame; SDPA against eager attention.
    _model_orders(world, source, ids[0], cfg, args.sam_points)
    print(f"(outputs under {work})")


def _throughput(cfg, work: Path, world: Path, source, ids: list[str], args) -> None:
    """1. Sequential loop over the same worker code, then the Ray driver pipelined and in the naive order."""
    from pipeline.features.driver import FeatureWorker, run_features

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
    del worker

    reports = {}
    for name, in_flight in ((f"ray x{args.actors}", 2), (f"ray x{args.actors} naive", 1)):
        run_cfg = cfg.model_copy(update={"max_in_flight": in_flight})
        reports[name] = run_features(run_cfg, work / name.replace(" ", "_"), world, source, executor="ray")
        assert reports[name].ok, reports[name].failed
    _print_throughput(ids, args, loop_seq, setup_seq, steps_seq, reports)


def _cross_frame_identity(cfg, source, ids: list[str]) -> None:
    """2. The 3D-overlap merge against GT identities (scrambled per frame), and the no-merge baseline."""
    from pipeline.features.stage import prepare_frames
    from pipeline.models.mask_merge import merge_frames_3d
    from pipeline.models.rgbd import RGBDGeometry

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


def _tiny_sam2(cfg, work: Path, world: Path, source, ids: list[str]) -> None:
    """3. Tiny random SAM 2 through the sam2 path (plumbing; untrained masks)."""
    from pipeline.features import store
    from pipeline.features.driver import run_features
    from pipeline.features.stage import prepare_frames
    from schemas.config_features import SegmenterConfig

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


def _print_throughput(ids, args, loop_seq, setup_seq, steps_seq, reports) -> None:
    num = len(ids)
    names = list(reports)
    print(f"\nthroughput ({num} scenes, {args.frames} frames, {args.image_size[0]}x{args.image_size[1]} px, "
          f"{os.cpu_count()} CPUs; ray: pipelined = max_in_flight 2, naive = 1)")
    print(f"{'':26s}{'sequential':>12s}" + "".join(f"{n:>18s}" for n in names))
    print(f"{'ray.init s':26s}{0.0:12.2f}" + "".join(f"{reports[n].startup_seconds:18.2f}" for n in names))
    print(f"{'model setup s':26s}{setup_seq:12.2f}" + "".join(f"{reports[n].setup_seconds:18.2f}" for n in names))
    steady = {n: reports[n].wall_seconds - reports[n].setup_seconds - reports[n].startup_seconds for n in names}
    print(f"{'scenes/min steady state':26s}{60 * num / loop_seq:12.1f}"
          + "".join(f"{60 * num / max(steady[n], 1e-9):18.1f}" for n in names))
    print(f"{'  x the loop':26s}{1.0:12.2f}" + "".join(f"{loop_seq / max(steady[n], 1e-9):18.2f}" for n in names))
    print(f"{'scenes/min wall':26s}{60 * num / (loop_seq + setup_seq):12.1f}"
          + "".join(f"{60 * num / reports[n].wall_seconds:18.1f}" for n in names))
    for step in ("load", "prepare", "encoder", "geometry", "segmenter", "patchify", "write"):
        print(f"{step + ' s/scene':26s}{steps_seq.get(step, 0) / num:12.3f}"
              + "".join(f"{reports[n].seconds_per_step.get(step, 0) / num:18.3f}" for n in names))
    print("(per-step seconds under Ray are per actor, so they overlap in time; steady state = wall - ray.init - "
          "model setup)")


def _model_orders(world: Path, source, scene_id: str, cfg, points_per_side: int) -> None:
    import torch

    from pipeline.features.stage import prepare_frames
    from pipeline.models.qwen_encoder import QwenVisionEncoder
    from pipeline.models.resolve import resolve_model
    from pipeline.models.sam2_segmenter import SAM2Segmenter, load_segmenter
    from schemas.config_features import SegmenterConfig

    images, _, _ = prepare_frames(source.load_scene(scene_id), cfg)
    num_frames = len(images)
    prompts = points_per_side ** 2
    seg_cfg = SegmenterConfig(kind="sam2", model="toy:sam2", points_per_side=points_per_side,
                              points_per_batch=4 * prompts, frames_per_batch=8, pred_iou_thresh=0.0,
                              stability_thresh=0.0, min_mask_area=0.002)
    sam = load_segmenter(seg_cfg, world)
    t_naive, naive = best_of(lambda: [sam.frame_masks(image) for image in images], 3)
    t_batched, batched = best_of(lambda: sam.batch_masks(images), 3)
    same = all(np.array_equal(a[0], b[0]) for a, b in zip(naive, batched))
    print(f"\nSAM 2 automatic masks, tiny model, {num_frames} frames x {prompts} prompts, {images.shape[1]}x"
          f"{images.shape[2]} px, torch {torch.get_num_threads()} threads (best of 3)")
    print(f"{'per frame (naive)':34s}{t_naive:8.3f} s")
    print(f"{'batched (8 frames/encoder call, 4 frames/decoder call)':34s}{t_batched:8.3f} s  "
          f"{t_naive / t_batched:.2f}x, masks identical: {same}")

    eager = SAM2Segmenter(str(world / "models" / "sam2"), points_per_side=points_per_side,
                          points_per_batch=4 * prompts, pred_iou_thresh=0.0, stability_thresh=0.0,
                          attn_implementation="eager")
    t_eager, _ = best_of(lambda: eager.batch_masks(images), 3)
    print(f"{'batched, eager attention':34s}{t_eager:8.3f} s  (SDPA {t_eager / t_batched:.2f}x)")

    qwen = resolve_model(cfg.encoder.model, world)
    encoders = {impl: QwenVisionEncoder(str(qwen)) for impl in ("sdpa", "eager")}
    encoders["eager"].net.set_attn_implementation("eager")
    seconds = {impl: best_of(lambda e=enc: e.encode(images), 3)[0] for impl, enc in encoders.items()}
    print(f"Qwen2.5-VL vision tower (tiny), {num_frames} frames: SDPA {seconds['sdpa']:.3f} s, "
          f"eager {seconds['eager']:.3f} s ({seconds['eager'] / seconds['sdpa']:.2f}x); the encoder loads with "
          f"{encoders['sdpa'].net.config._attn_implementation!r}")


def _patch_majority(labels_FHW: np.ndarray, patch: int) -> np.ndarray:
    from pipeline.features.patchify import patchify

    dummy = np.zeros((*labels_FHW.shape, 3), np.float32)
    return patchify(labels_FHW, dummy, np.ones(labels_FHW.shape, np.float32), patch)[0]


if __name__ == "__main__":
    main()
