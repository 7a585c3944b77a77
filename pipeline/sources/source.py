"""The scene-source interface: a small, picklable description of where scenes live.

A source lists its scene ids and loads one `Scene` by id. It holds only paths and numbers, so a
driver can send it to Ray workers and call `load_scene` there, one scene per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.sources.base import Scene, SceneReadError


@dataclass(frozen=True)
class SceneSource:
    path: Path
    num_frames: int
    only: tuple[str, ...] | None = None  # restrict to these scene ids (workflow `source.scenes`)

    kind = "abstract"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"{self.kind} source {self.path}: num_frames must be >= 1, got {self.num_frames}")
        if not Path(self.path).exists():
            raise SceneReadError(f"{self.kind} source: {self.path} not found")

    def available(self) -> list[str]:
        """Every scene id found under `path`, sorted."""
        raise NotImplementedError

    def scene_ids(self) -> list[str]:
        found = self.available()
        if self.only is None:
            return found
        unknown = sorted(set(self.only) - set(found))
        if unknown:
            raise SceneReadError(f"{self.kind} source {self.path}: unknown scene ids {unknown}")
        return list(self.only)

    def load_scene(self, scene_id: str) -> Scene:
        raise NotImplementedError
