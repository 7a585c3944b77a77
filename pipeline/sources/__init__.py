"""Scene sources: every reader yields the same `Scene` (see base.py).

    source = open_source(workflow.source, num_frames=32)
    for scene_id in source.scene_ids():
        scene = source.load_scene(scene_id)      # e.g. inside a Ray task; `source` pickles cheaply

`SOURCES` maps the workflow's `source.kind` to the source class.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.sources.base import Scene, SceneReadError, uniform_indices
from pipeline.sources.scannet import ScanNetSource
from pipeline.sources.source import SceneSource
from pipeline.sources.toy.source import ToySource
from pipeline.sources.video import VideoSource
from schemas.workflow import SourceConfig

SOURCES: dict[str, type[SceneSource]] = {
    "toy": ToySource,
    "scannet": ScanNetSource,
    "video": VideoSource,
}


def open_source(cfg: SourceConfig, num_frames: int) -> SceneSource:
    """The source a workflow's `source:` section describes, sampling `num_frames` per scene."""
    if cfg.kind not in SOURCES:
        raise ValueError(f"unknown source kind {cfg.kind!r}; known: {', '.join(SOURCES)}")
    only = tuple(cfg.scenes) if cfg.scenes is not None else None
    return SOURCES[cfg.kind](Path(cfg.path), num_frames, only)


__all__ = ["SOURCES", "Scene", "SceneReadError", "SceneSource", "ScanNetSource", "ToySource",
           "VideoSource", "open_source", "uniform_indices"]
