"""Build the toy world on disk: scenes in ScanNet's exported-frame layout plus ground truth.

    <root>/categories.json          ordered category list
    <root>/annotations.jsonl        schemas.Record for every scene
    <root>/toy_world.json           the generator config and version (provenance); complete: false
                                    while a render runs (a killed one is redone)
    <scenes_dir>/<scene_id>/        color/<i>.jpg  depth/<i>.png (uint16 mm)  pose/<i>.txt
                                    instance-filt/<i>.png (uint8, 0 = none, id + 1)
                                    intrinsic/{intrinsic,extrinsic}_{color,depth}.txt
                                    objects.json (list of ObjectInfo)  manifest.json (SceneManifest)

`make_scene` is the pure part (seed in, arrays out); `build_toy_world` writes files atomically:
every scene folder is assembled under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.processes import die_with_parent
from pipeline.toy.annotate import generate_records
from pipeline.toy.layout import ToyLayout, camera_path, intrinsics_for, sample_layout
from pipeline.toy.render import BoxScene, Rendered, render
from pipeline.toy.shapes import CATEGORY_NAMES
from schemas.io import remove_stale_temporaries, replace_dir, temporary_sibling, write_json_atomic
from schemas.layout import CATEGORIES_FILE, RECORDS_FILE
from schemas.manifest import ObjectInfo, SceneManifest
from schemas.record import Record, write_records
from schemas.workflow import ToyWorldConfig

log = logging.getLogger(__name__)

# 2: counting records name the counted objects (target_ids); 3: distance and left/right records
# carry the words their question names the objects by (target_names). A world of another version is
# rendered again (pipeline/toy/scenes.py: ensure_toy_world).
TOY_WORLD_VERSION = 3
SCENE_ID_PATTERN = re.compile(r"^toy\d{4}$")
TOY_WORLD_FILE = "toy_world.json"
DEPTH_SHIFT = 1000.0  # uint16 depth PNG units per metre, as ScanNet writes them
MIN_VIEWS = 3  # frames in which every object must be visible
MIN_PIXELS = 40  # pixels that count as "visible" in one frame
MAX_ATTEMPTS = 8


def required_views(num_frames: int) -> int:
    """Frames each object must be visible in: MIN_VIEWS for 24 frames or more, fewer for shorter
    paths (one frame sweeps 360 / num_frames degrees, so short paths see less of each object)."""
    return min(MIN_VIEWS, max(1, -(-num_frames // 8)))


def scene_id_for(index: int) -> str:
    return f"toy{index:04d}"


def split_for(index: int, num_scenes: int, num_val: int | None = None) -> str:
    """The last `num_val` scenes are validation; by default the last quarter (at least one, when there
    are two or more)."""
    if num_val is None:
        num_val = max(1, num_scenes // 4) if num_scenes >= 2 else 0
    return "val" if index >= num_scenes - num_val else "train"


@dataclass
class ToyScene:
    scene_id: str
    split: str
    layout: ToyLayout
    poses_F44: np.ndarray
    k_33: np.ndarray
    frames: list[Rendered]
    records: list[Record]


def _box_scene(layout: ToyLayout) -> BoxScene:
    lo, hi, rgb, inst = [], [], [], []
    for o in layout.objects:
        for part_lo, part_hi, shade in o.parts:
            lo.append(part_lo)
            hi.append(part_hi)
            rgb.append(np.asarray(o.rgb, float) * shade)
            inst.append(o.id)
    return BoxScene(layout.size_3, layout.floor_rgb, layout.wall_rgb, np.array(lo), np.array(hi),
                    np.array(rgb), np.array(inst, dtype=np.int32))


def views_per_object(layout: ToyLayout, frames: list[Rendered]) -> dict[int, int]:
    counts = {o.id: 0 for o in layout.objects}
    for f in frames:
        ids, pixels = np.unique(f.instance_HW, return_counts=True)
        for i, n in zip(ids.tolist(), pixels.tolist()):
            if i >= 0 and n >= MIN_PIXELS:
                counts[i] += 1
    return counts


def make_scene(index: int, cfg: ToyWorldConfig) -> ToyScene:
    """Scene `index` of the world: deterministic in (cfg.seed, index). A layout in which some
    object would be seen in fewer than MIN_VIEWS frames is redrawn from the next sub-seed."""
    scene_id = scene_id_for(index)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([cfg.seed, index, attempt])
        layout = sample_layout(rng)
        poses_F44 = camera_path(layout, cfg.frames, rng)
        k_33 = intrinsics_for(cfg.image_size)
        boxes = _box_scene(layout)
        frames = [render(boxes, pose, k_33, cfg.image_size, rng) for pose in poses_F44]
        views = views_per_object(layout, frames)
        if min(views.values()) >= required_views(cfg.frames):
            break
        log.debug("%s: attempt %d redrawn, views per object %s", scene_id, attempt, views)
    else:
        raise RuntimeError(f"{scene_id}: no layout with every object visible in {required_views(cfg.frames)} frames "
                           f"after {MAX_ATTEMPTS} attempts (frames={cfg.frames})")
    split = split_for(index, cfg.num_scenes, cfg.val_scenes)
    records = generate_records(layout, scene_id, split, np.random.default_rng([cfg.seed, index, 10_000]))
    return ToyScene(scene_id, split, layout, poses_F44, k_33, frames, records)


def _write_matrix(path: Path, m: np.ndarray) -> None:
    path.write_text("".join(" ".join(f"{x:f}" for x in row) + "\n" for row in m))


def _write_json_atomic(path: Path, data) -> None:
    write_json_atomic(path, data)


def objects_of(layout: ToyLayout) -> list[ObjectInfo]:
    return [ObjectInfo(id=o.id, category=o.category, box=o.box())
            for o in layout.objects]


def write_scene(scene: ToyScene, scenes_dir: Path, rel_path: str) -> Path:
    final = scenes_dir / scene.scene_id
    tmp = temporary_sibling(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("color", "depth", "pose", "instance-filt", "intrinsic"):
        (tmp / sub).mkdir(parents=True)
    assert max((o.id for o in scene.layout.objects), default=0) < 255, "instance PNGs are 8-bit"
    for i, (frame, pose) in enumerate(zip(scene.frames, scene.poses_F44)):
        Image.fromarray(frame.rgb_HW3).save(tmp / "color" / f"{i}.jpg", quality=92)
        depth_mm = np.clip(np.round(frame.depth_HW * DEPTH_SHIFT), 0, 65535).astype(np.uint16)
        Image.fromarray(depth_mm).save(tmp / "depth" / f"{i}.png")
        Image.fromarray((frame.instance_HW + 1).astype(np.uint8)).save(tmp / "instance-filt" / f"{i}.png")
        _write_matrix(tmp / "pose" / f"{i}.txt", pose)
    k_44 = np.eye(4)
    k_44[:3, :3] = scene.k_33
    for name, m in (("intrinsic_color", k_44), ("intrinsic_depth", k_44),
                    ("extrinsic_color", np.eye(4)), ("extrinsic_depth", np.eye(4))):
        _write_matrix(tmp / "intrinsic" / f"{name}.txt", m)
    objects = objects_of(scene.layout)
    (tmp / "objects.json").write_text(json.dumps([o.model_dump() for o in objects], indent=1))
    h, w = scene.frames[0].depth_HW.shape
    manifest = SceneManifest(
        scene_id=scene.scene_id, source="toy", path=rel_path, num_frames_total=len(scene.frames),
        frame_indices=list(range(len(scene.frames))), image_size=[h, w], has_depth=True,
        has_instances=True, objects=objects, split=scene.split,
    )
    # The manifest is written last inside the folder: a folder without it is unfinished.
    (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=1))
    replace_dir(tmp, final)  # the old folder goes only once the new one is in place
    return final


def _build_scene(index: int, cfg: ToyWorldConfig, scenes_dir: Path, root: Path) -> tuple[ToyScene, str]:
    """Render and write one scene (a pool task: each scene is seeded by its index alone)."""
    scene = make_scene(index, cfg)
    write_scene(scene, scenes_dir, os.path.relpath(scenes_dir / scene.scene_id, root))
    # The frames are on disk; sending them back to the parent would only cost time.
    return replace(scene, frames=[]), f"{len(scene.layout.objects)} objects, {len(scene.frames)} frames"


def build_toy_world(root: Path, scenes_dir: Path, cfg: ToyWorldConfig,
                    progress: Callable[[str], None] = print, workers: int | None = None) -> dict:
    """Render and write `cfg.num_scenes` scenes with `workers` processes (default: one per core, at
    most 8; 1 renders in this process); returns a summary (counts, seconds). The world is the
    same whatever the number of workers: scenes are seeded by index and records kept in index order.
    toy_world.json says `complete: false` from the start until the last file is written, so that a
    world whose rendering was killed (old and new scenes side by side) is never taken as finished."""
    root, scenes_dir = Path(root), Path(scenes_dir)
    scenes_dir.mkdir(parents=True, exist_ok=True)
    summary = {"version": TOY_WORLD_VERSION, "config": cfg.model_dump(mode="json"),
               "scenes_dir": os.path.relpath(scenes_dir, root), "num_scenes": cfg.num_scenes}
    _write_json_atomic(root / TOY_WORLD_FILE, {**summary, "complete": False})
    for folder in (root, scenes_dir):
        remove_stale_temporaries(folder)
    wanted = {scene_id_for(i) for i in range(cfg.num_scenes)}
    for stale in sorted(scenes_dir.iterdir()):
        if stale.is_dir() and SCENE_ID_PATTERN.match(stale.name) and stale.name not in wanted:
            progress(f"removing {stale.name}: not part of a {cfg.num_scenes}-scene world")
            shutil.rmtree(stale)
    start = time.perf_counter()
    records: list[Record] = []
    workers = min(workers or min(os.cpu_count() or 1, 8), cfg.num_scenes)
    build = partial(_build_scene, cfg=cfg, scenes_dir=scenes_dir, root=root)
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                                           initializer=die_with_parent,
                                                           initargs=(os.getpid(),)))
            built = pool.map(build, range(cfg.num_scenes))  # in index order
        else:
            built = map(build, range(cfg.num_scenes))
        for i, (scene, what) in enumerate(built):
            records.extend(scene.records)
            progress(f"[{i + 1}/{cfg.num_scenes}] {scene.scene_id} ({scene.split}): {what}, "
                     f"{len(scene.records)} records, {time.perf_counter() - start:.1f}s")
    num_records = write_records(records, root / RECORDS_FILE)
    _write_json_atomic(root / CATEGORIES_FILE, CATEGORY_NAMES)
    summary = {**summary, "num_records": num_records, "complete": True}
    _write_json_atomic(root / TOY_WORLD_FILE, summary)
    return {**summary, "seconds": time.perf_counter() - start}
