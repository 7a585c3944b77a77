"""Scene providers for the feature driver: the workflow's scene source, and an in-memory one.

A provider lists scene ids and loads one `Scene` by id inside a worker (see driver.SceneProvider).
  open_workflow_source  the workflow's `source:` section through `pipeline.sources` (files on disk);
  InMemoryScenes        ready-made `Scene` objects (tests with hand-built scenes).
The toy world's scenes rendered on demand, without files, are pipeline/toy/scenes.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sources.base import Scene
from schemas.workflow import Workflow


@dataclass
class InMemoryScenes:
    scenes: dict[str, Scene]

    @classmethod
    def of(cls, scenes: list[Scene]) -> InMemoryScenes:
        return cls({s.scene_id: s for s in scenes})

    def scene_ids(self) -> list[str]:
        return list(self.scenes)

    def load_scene(self, scene_id: str) -> Scene:
        if scene_id not in self.scenes:
            raise ValueError(f"scene {scene_id}: not among the in-memory scenes")
        return self.scenes[scene_id]


def open_workflow_source(workflow: Workflow, num_frames: int, scene_ids: list[str] | None = None):
    """The workflow's scene source (picklable, loads scenes from files), limited to `scene_ids`."""
    from pipeline.sources import open_source

    source_cfg = workflow.source
    if scene_ids is not None:
        source_cfg = source_cfg.model_copy(update={"scenes": list(scene_ids)})
    return open_source(source_cfg, num_frames=num_frames)
