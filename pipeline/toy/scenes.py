"""Toy-world scenes for the feature stage: rendered on demand, and the toy source's prepare hook.

  ToyRenderedScenes  toy-world scenes rendered on demand from (seed, index), no files needed; the same
                     pure `make_scene` the toy-world writer uses (benchmark, tests);
  render_reason      why a toy world on disk must be rendered (again) for a config; None when it is current.
  ensure_toy_world   `ToySource.prepare`: render the world before features when it is missing or stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.sources.base import Scene, uniform_indices
from schemas.workflow import SourceConfig, ToyWorldConfig


@dataclass(frozen=True)
class ToyRenderedScenes:
    toy: ToyWorldConfig
    num_frames: int

    def scene_ids(self) -> list[str]:
        from pipeline.toy.world import scene_id_for

        return [scene_id_for(i) for i in range(self.toy.num_scenes)]

    def fingerprint(self, scene_id: str) -> str:
        """Scenes are made from (toy config, index) alone: the config is their identity."""
        return hashlib.sha256(f"toy\0{self.toy.model_dump_json()}\0{scene_id}".encode()).hexdigest()[:16]

    def load_scene(self, scene_id: str) -> Scene:
        from pipeline.toy.world import make_scene, objects_of

        if scene_id not in self.scene_ids():
            raise ValueError(f"scene {scene_id}: not in a {self.toy.num_scenes}-scene toy world")
        toy = make_scene(self.scene_ids().index(scene_id), self.toy)
        pick = uniform_indices(len(toy.frames), self.num_frames)
        frames = [toy.frames[i] for i in pick]
        return Scene(
            scene_id=scene_id, source="toy", path=f"toy:{self.toy.seed}/{scene_id}", frame_indices=pick,
            images_FHW3=np.stack([f.rgb_HW3 for f in frames]),
            depth_FHdWd=np.stack([f.depth_HW for f in frames]).astype(np.float32),
            poses_F44=toy.poses_F44[pick].astype(np.float32),
            intrinsics_F33=np.repeat(toy.k_33[None], len(pick), 0).astype(np.float32),
            instances_FHW=np.stack([f.instance_HW for f in frames]).astype(np.int32),
            objects=objects_of(toy.layout), num_frames_total=len(toy.frames), split=toy.split,
        )


def render_reason(scenes_dir: Path, toy: ToyWorldConfig) -> str | None:
    """Why the toy world under `scenes_dir` must be rendered (again) for `toy`, said as the end of "toy
    world under <scenes_dir> ..."; None when it is there: a finished render of this config by this
    version of the generator (TOY_WORLD_VERSION: its records differ), or a world without provenance
    (no toy_world.json beside it: hand-made, kept as it is)."""
    from pipeline.toy.world import SCENE_ID_PATTERN, TOY_WORLD_FILE, TOY_WORLD_VERSION, scene_id_for

    if not (scenes_dir.is_dir() and any((p / "manifest.json").exists() for p in scenes_dir.iterdir())):
        return "not found"
    made = scenes_dir.parent / TOY_WORLD_FILE
    if not made.is_file():
        return None
    try:
        made_info = json.loads(made.read_text())
        made_with = made_info.get("config")
    except (ValueError, AttributeError):
        made_info, made_with = {}, None
    if made_with is None:  # written atomically, so not by a finished render of ours
        return f"has a toy_world.json without its config ({made})"
    if made_info.get("complete") is False:  # a render was killed: old and new scenes mixed
        return f"was not finished ({made})"
    if made_info.get("version") != TOY_WORLD_VERSION:
        return f"was rendered by toy world version {made_info.get('version')}, not {TOY_WORLD_VERSION} ({made})"
    if made_with != toy.model_dump(mode="json"):
        return f"was rendered from another config than the workflow's ({made})"
    wanted = {scene_id_for(i) for i in range(toy.num_scenes)}
    missing = sorted(s for s in wanted if not (scenes_dir / s / "manifest.json").is_file())
    if missing:
        return f"lacks {len(missing)} of its {toy.num_scenes} scenes ({', '.join(missing[:3])})"
    stray = sorted(p.name for p in scenes_dir.iterdir()
                   if p.is_dir() and SCENE_ID_PATTERN.match(p.name) and p.name not in wanted)
    if stray:
        return f"holds {len(stray)} scenes not part of a {toy.num_scenes}-scene world ({', '.join(stray[:3])})"
    return None


def ensure_toy_world(source: SourceConfig, echo: Callable[[str], object] = print) -> bool:
    """The toy source's `prepare` hook: render the toy world first when a toy workflow's scenes folder
    is empty or stale (`render_reason`); True if it rendered."""
    from pipeline.toy.world import build_toy_world

    if source.kind != "toy":
        return False
    scenes_dir = Path(source.path)
    toy = source.toy or ToyWorldConfig()
    why = render_reason(scenes_dir, toy)
    if why is None:
        return False
    echo(f"toy world under {scenes_dir} {why}: rendering it " + ("first" if why == "not found" else "again"))
    build_toy_world(scenes_dir.parent, scenes_dir, toy, progress=echo)
    return True
