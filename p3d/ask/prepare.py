"""One scene made ready for a checkpoint: its own workflow, the checks, features -> cluster, cached.

The workflow is the one the checkpoint was trained with: `resolved_workflow.yaml`, which every
training run saves beside its model (`<train.out>/stage<N>/resolved_workflow.yaml`, the model in
`stage<N>/model`). `--workflow`/`--set` may replace it, but never its encoder: the projector reads
features of the encoder it was trained on, so another one is refused (as is a store scene made by
another encoder, or features of another width).

The scene then goes through the stage drivers themselves (`run_features`, local executor, then
`run_cluster`) into a cache folder of its own, `<cache>/<scene_id>-<key>`, key = the source's
fingerprint + the workflow's features and cluster sections: a second question on the same scene
re-uses the store group and the shard (the drivers' own resume: nothing is recomputed), and an
edited video or another checkpoint's settings get a folder of their own.

A checkpoint trained with the toy world's simulated networks (`sim_vggt`, `sim_sam2`: VGGT's and
SAM 2's output contracts made from ground truth) can read only a source that brings that ground
truth: a ScanNet or toy scene folder, or a filmed toy video with its sidecar (pipeline/sources/film.py,
pipeline/sources/sidecar.py), whose rows must match the video's frames. A bare video is refused in
one line: a real video goes through a checkpoint trained with the real networks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p3d.ask.inputs import AskInput, count_frames
from schemas.layout import RESOLVED_WORKFLOW
from schemas.workflow import ResolvedWorkflow

WORKFLOW_FILE = RESOLVED_WORKFLOW  # what every training stage saves beside its model
PROXY_SET = "ask"
NEEDS_SENSORS = {"rgbd": "sensor depth and poses", "sim_vggt": "sensor depth and poses",
                 "instances": "ground-truth instance masks", "sim_sam2": "ground-truth instance masks"}
MIN_PARALLAX = 0.02  # RMS spread of the camera centres / median camera-to-point distance


class AskError(ValueError):
    """Bad input or a checkpoint that does not fit the scene: one line for the user."""


@dataclass
class PreparedScene:
    scene_id: str
    cache_dir: Path
    sample: dict  # the decoded proxy sample (trainer.shard_reader.decode_sample: segments as dicts)
    alignment: dict = field(default_factory=dict)  # method, scale_method, scale, up_method
    cached: bool = False  # store group and shard were re-used
    warnings: list[str] = field(default_factory=list)


def default_cache_root() -> Path:
    base = os.environ.get("P3D_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p3d"
    return Path(base) / "ask"


def checkpoint_workflow(checkpoint: Path, workflow: Path | None, sets: list[str]) -> ResolvedWorkflow:
    """The checkpoint's own workflow (or `--workflow`), with `--set`; an encoder other than the
    checkpoint's own is refused."""
    from schemas.errors import SchemaError
    from schemas.workflow import resolve_workflow

    own = checkpoint.parent / WORKFLOW_FILE
    if not (checkpoint / "p3d_config.json").is_file():
        raise AskError(f"--checkpoint {checkpoint}: not a p3d checkpoint (no p3d_config.json); give an exported "
                       "model folder, <train.out>/stage<N>/model")
    if workflow is None and not own.is_file():
        raise AskError(f"--checkpoint {checkpoint}: no {WORKFLOW_FILE} beside it ({own}); give the workflow it was "
                       "trained with: --workflow FILE")
    try:
        run = resolve_workflow(workflow or own, sets)
        trained = resolve_workflow(own).workflow if own.is_file() else None
    except SchemaError as e:
        raise AskError(str(e)) from e
    if trained is not None:
        want, got = trained.features.encoder, run.workflow.features.encoder
        if (want.kind, want.model, want.revision) != (got.kind, got.model, got.revision):
            raise AskError(f"the workflow's encoder {got.model} (revision {got.revision}) is not the one the checkpoint "
                           f"was trained on, {want.model} (revision {want.revision}, {own}): its projector "
                           "reads that encoder's features")
    return run


def sensor_backends(run: ResolvedWorkflow) -> list[tuple[str, str]]:
    """(role, kind) of the workflow's backends that read sensors or ground truth rather than pixels."""
    feats = run.workflow.features
    return [(what, kind) for what, kind in (("geometry", feats.geometry.kind), ("segmenter", feats.segmenter.kind))
            if kind in NEEDS_SENSORS]


def check_backends(run: ResolvedWorkflow, ask_input: AskInput) -> None:
    """Backends that need what the source does not have (a bare video has no sensor depth, poses or GT)."""
    needed = sensor_backends(run)
    if ask_input.has_sensors or ask_input.kind == "store" or not needed:
        return
    from pipeline.sources.sidecar import sidecar_path

    (what, kind), toy_video = needed[0], ""
    if ask_input.kind == "video":
        toy_video = f" and no ground-truth sidecar ({sidecar_path(ask_input.path).name}, written when a toy scene is filmed)"
    raise AskError(
        f"the checkpoint's workflow uses {what} {kind!r}, which needs {NEEDS_SENSORS[kind]}; the {ask_input.kind} "
        f"has none{toy_video}. A real video is read by a checkpoint trained with geometry 'vggt' and segmenter "
        f"'sam2' (the real networks); or ask about a scene that has its sensors (ScanNet or toy scene folder, "
        f"filmed toy video)")


def check_store_scene(run: ResolvedWorkflow, ask_input: AskInput) -> None:
    import zarr

    attrs = zarr.open_group(str(ask_input.path), mode="r").attrs.asdict()
    enc, want = attrs.get("encoder") or {}, run.workflow.features.encoder
    if (enc.get("model"), enc.get("revision")) != (want.model, want.revision):
        raise AskError(f"{ask_input.path} was made by encoder {enc.get('model')} (revision {enc.get('revision')}); "
                       f"the checkpoint reads {want.model} (revision {want.revision}) features")


def cache_key(run: ResolvedWorkflow, ask_input: AskInput) -> str:
    wf = run.workflow
    payload = json.dumps([ask_input.kind, ask_input.fingerprint, wf.features.model_dump(mode="json"),
                          wf.cluster.model_dump(mode="json", exclude={"name", "num_workers", "executor"})],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def check_frames(run: ResolvedWorkflow, ask_input: AskInput) -> None:
    """A video or frame folder shorter than the frames the workflow samples is refused up front."""
    from pipeline.features.align import MIN_FRAMES

    total = count_frames(ask_input)
    wanted = run.workflow.features.num_frames
    if total is None:
        return
    if total == 0:
        raise AskError(f"{ask_input.path}: holds no frames")
    if total < max(wanted, MIN_FRAMES):
        raise AskError(f"{ask_input.path}: too short: {total} frames, the checkpoint's workflow samples "
                       f"{wanted} (features.num_frames); film longer, walking around the room")
    if ask_input.sidecar is not None:
        from pipeline.sources.base import SceneReadError
        from pipeline.sources.sidecar import check_frame_count

        try:
            check_frame_count(ask_input.path, total)
        except SceneReadError as e:
            raise AskError(str(e)) from e


def check_parallax(pose_F44: np.ndarray, xyz_Fhw3: np.ndarray) -> str | None:
    """Why the cameras cannot see the room in 3D (they barely moved), or None. Pure: the RMS spread of
    the camera centres against the median camera-to-point distance, both in the store's frame."""
    centres_F3 = pose_F44[:, :3, 3]
    centres_F3 = centres_F3[np.isfinite(centres_F3).all(-1)]
    if len(centres_F3) < 2:
        return f"only {len(centres_F3)} frame(s) have a camera pose"
    spread = float(np.sqrt(((centres_F3 - centres_F3.mean(0)) ** 2).sum(-1).mean()))
    points_N3 = xyz_Fhw3.reshape(-1, 3)
    points_N3 = points_N3[np.isfinite(points_N3).all(-1)]
    if not len(points_N3):
        return "no frame has valid geometry"
    depth = float(np.median(np.linalg.norm(points_N3 - centres_F3.mean(0), axis=-1)))
    if spread < MIN_PARALLAX * depth:
        return (f"not enough parallax: the cameras moved {spread:.3g} (RMS) for a scene {depth:.3g} away "
                f"(under {MIN_PARALLAX:.0%}); film while walking around the room, not turning on the spot")
    return None


def _feature_failure(reason: str) -> str:
    lowered = reason.lower()
    if "coincide" in lowered or "collinear" in lowered or "up directions disagree" in lowered:
        return f"not enough parallax to place the scene in 3D ({reason}); film while walking around the room"
    return reason


def prepare_scene(run: ResolvedWorkflow, ask_input: AskInput, cache_root: Path, executor: str = "local",
                  echo=print) -> PreparedScene:
    """Features -> cluster for the one scene, re-using the cache; the decoded proxy sample."""
    from pipeline.cluster.driver import run_cluster
    from pipeline.cluster.shards import proxies_dir
    from pipeline.features import store
    from pipeline.features.driver import run_features
    from schemas.proxy import INDEX_FILE
    from trainer.shard_reader import iter_scenes

    wf = run.workflow
    check_backends(run, ask_input)
    if ask_input.kind == "store":
        check_store_scene(run, ask_input)
    else:
        check_frames(run, ask_input)
    cache_dir = cache_root / f"{ask_input.scene_id}-{cache_key(run, ask_input)}"
    scene_id, cached = ask_input.scene_id, False
    if ask_input.kind == "store":
        link = store.scene_path(cache_dir, scene_id)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(ask_input.path.resolve(), link, target_is_directory=True)
        features_done = True
    else:
        report = run_features(wf.features, cache_dir, Path(wf.out), ask_input.provider, scene_ids=[scene_id],
                              executor=executor)
        if report.failed:
            raise AskError(f"{ask_input.path}: {_feature_failure(report.failed[scene_id])}")
        features_done = scene_id in report.skipped
    triplets = store.read_scene(cache_dir, scene_id)
    problem = check_parallax(triplets.pose_F44, triplets.xyz_Fhw3)
    if problem is not None and ask_input.kind != "store":
        raise AskError(f"{ask_input.path}: {problem}")
    cluster_cfg = wf.cluster.model_copy(update={"name": PROXY_SET, "executor": "local", "scenes_per_shard": 1})
    if cluster_cfg.space == "xyz+feat" and cluster_cfg.stats is None:
        from pipeline.cluster.stats import default_stats_path

        # Whitened as the training scenes were: their statistics, not this one scene's.
        cluster_cfg = cluster_cfg.model_copy(update={"stats": str(default_stats_path(wf.out))})
    shard_dir = proxies_dir(cache_dir, PROXY_SET)
    if features_done and (shard_dir / INDEX_FILE).is_file():
        cached = True
    else:
        report = run_cluster(cache_dir, cluster_cfg, scenes=[scene_id])
        if report.failed:
            raise AskError(f"{ask_input.path}: clustering failed: {report.failed[scene_id]}")
    sample = next(iter(iter_scenes(shard_dir, shuffle=False)))
    alignment = triplets.attrs.alignment
    aligned = ({"method": "none", "scale_method": triplets.attrs.scale_method, "scale": triplets.attrs.scale}
               if alignment is None else alignment.model_dump(mode="json", exclude={"similarity"}))
    echo(f"scene {scene_id}: {'cached' if cached else 'prepared'} in {cache_dir} "
         f"({sample['meta']['num_proxies']} proxies, {len(sample['segments'])} segments)")
    return PreparedScene(scene_id, cache_dir, sample, aligned, cached)
