"""Film a toy scene into a video and its ground-truth sidecar, as `p3d ask` gets a user's video
(pipeline/ask/film.py films any `Scene`; this module makes the toy world's scenes).

Legend: F frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene
from schemas.workflow import ToyWorldConfig


def film_scene_folder(scenes_dir: str | Path, scene_id: str, path: str | Path, fps: int = 10) -> Path:
    """A toy scene already on disk (`<scenes_dir>/<scene_id>`), every frame, into a video and its sidecar."""
    from pipeline.ask.film import film_scene
    from pipeline.sources.toy.source import ToySource

    scene = ToySource(Path(scenes_dir), 1 << 30, (scene_id,)).load_scene(scene_id)  # every frame
    return film_scene(scene, path, fps)


def film_toy_scene(toy: ToyWorldConfig, index: int, path: str | Path, fps: int = 10) -> Path:
    """Scene `index` of a toy world, every rendered frame, into a video and its sidecar."""
    from pipeline.ask.film import film_scene
    from pipeline.sources.toy import make_scene
    from pipeline.sources.toy.world import objects_of

    toy_scene = make_scene(index, toy)
    num = len(toy_scene.frames)
    k_F33 = np.repeat(np.asarray(toy_scene.k_33, np.float32)[None], num, 0)
    scene = Scene(scene_id=toy_scene.scene_id, source="toy", path=str(path),
                  frame_indices=np.arange(num, dtype=np.int64),
                  images_FHW3=np.stack([frame.rgb_HW3 for frame in toy_scene.frames]),
                  depth_FHdWd=np.stack([frame.depth_HW for frame in toy_scene.frames]).astype(np.float32),
                  poses_F44=np.asarray(toy_scene.poses_F44, np.float32), intrinsics_F33=k_F33,
                  instances_FHW=np.stack([frame.instance_HW for frame in toy_scene.frames]).astype(np.int32),
                  objects=objects_of(toy_scene.layout), num_frames_total=num, split=toy_scene.split)
    return film_scene(scene, path, fps)
