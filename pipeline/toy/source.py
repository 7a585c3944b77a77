"""Reading the toy world back: the exported-frame reader plus objects.json and manifest.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from pipeline.sources.base import Scene, SceneReadError
from pipeline.sources.frames import read_frame_folder
from pipeline.sources.source import SceneSource
from schemas.manifest import ObjectInfo, SceneManifest

MANIFEST = "manifest.json"
OBJECTS = "objects.json"


def read_objects(scene_id: str, path: Path) -> list[ObjectInfo]:
    try:
        data = json.loads(path.read_text())
        return [ObjectInfo.model_validate(o) for o in data]
    except FileNotFoundError as e:
        raise SceneReadError(f"scene {scene_id}: {path} not found") from e
    except (json.JSONDecodeError, ValidationError, TypeError) as e:
        raise SceneReadError(f"scene {scene_id}: invalid {path}: {e}") from e


def read_manifest(scene_id: str, path: Path) -> SceneManifest:
    try:
        return SceneManifest.model_validate_json(path.read_text())
    except FileNotFoundError as e:
        raise SceneReadError(f"scene {scene_id}: {path} not found (unfinished scene?)") from e
    except ValidationError as e:
        raise SceneReadError(f"scene {scene_id}: invalid {path}: {e}") from e


@dataclass(frozen=True)
class ToySource(SceneSource):
    """`path` is the toy world's scenes folder (`<out>/scenes`)."""

    kind = "toy"

    @staticmethod
    def prepare(cfg, echo=print) -> bool:
        """Render the world first when it is missing or stale (`pipeline.sources.prepare_source`)."""
        from pipeline.toy.scenes import ensure_toy_world

        return ensure_toy_world(cfg, echo)

    def available(self) -> list[str]:
        # Hidden folders are a writer's temporary or set-aside copies (schemas.io.replace_dir).
        return sorted(p.name for p in Path(self.path).iterdir()
                      if not p.name.startswith(".") and (p / MANIFEST).is_file())

    def load_scene(self, scene_id: str) -> Scene:
        folder = Path(self.path) / scene_id
        manifest = read_manifest(scene_id, folder / MANIFEST)
        objects = read_objects(scene_id, folder / OBJECTS)
        scene = read_frame_folder(scene_id, folder, self.num_frames, source="toy")
        if scene.instances_FHW is not None:
            unknown = set(np.unique(scene.instances_FHW).tolist()) - {o.id for o in objects} - {-1}
            if unknown:
                raise SceneReadError(f"scene {scene_id}: instance ids {sorted(unknown)} in "
                                     f"{folder / 'instance-filt'} are not in {folder / OBJECTS}")
        scene.objects = objects
        scene.split = manifest.split
        return scene
