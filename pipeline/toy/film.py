"""Film a toy scene into a video and its ground-truth sidecar, as `p3d ask` gets a user's video
(pipeline/sources/film.py films any `Scene`; this module picks the toy world's)."""

from __future__ import annotations

from pathlib import Path

from schemas.workflow import ToyWorldConfig


def film_scene_folder(scenes_dir: str | Path, scene_id: str, path: str | Path, fps: int = 10) -> Path:
    """A toy scene already on disk (`<scenes_dir>/<scene_id>`), every frame, into a video and its sidecar."""
    from pipeline.sources.film import film_scene
    from pipeline.toy.source import ToySource

    scene = ToySource(Path(scenes_dir), 1 << 30, (scene_id,)).load_scene(scene_id)  # every frame
    return film_scene(scene, path, fps)


def film_toy_scene(toy: ToyWorldConfig, index: int, path: str | Path, fps: int = 10) -> Path:
    """Scene `index` of a toy world, every rendered frame, into a video and its sidecar."""
    from pipeline.sources.film import film_scene
    from pipeline.toy.scenes import ToyRenderedScenes
    from pipeline.toy.world import scene_id_for

    every_frame = ToyRenderedScenes(toy, num_frames=1 << 30)
    return film_scene(every_frame.load_scene(scene_id_for(index)), path, fps)
