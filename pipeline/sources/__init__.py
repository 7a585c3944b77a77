"""Scene sources: every reader yields the same `Scene` (see base.py).

    prepare_source(workflow.source)              # a source that builds itself when missing (the toy world)
    source = open_source(workflow.source, num_frames=32)
    for scene_id in source.scene_ids():
        scene = source.load_scene(scene_id)      # e.g. inside a Ray task; `source` pickles cheaply

The workflow's `source.kind` names a source class through the plugin registry (schemas/plugins.py,
group `p3d.sources`): `scannet` and `video` here, `toy` in pipeline/toy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.sources.base import Scene, SceneReadError, uniform_indices
from pipeline.sources.scannet import ScanNetSource
from pipeline.sources.source import SceneSource
from pipeline.sources.video import VideoSource
from schemas.plugins import SOURCES
from schemas.plugins import load as load_plugin
from schemas.workflow import SourceConfig


def source_class(kind: str) -> type[SceneSource]:
    """The class registered for `kind`; `UnknownPlugin` (a ValueError) listing the kinds otherwise."""
    return load_plugin(SOURCES, kind)


def prepare_source(cfg: SourceConfig, echo: Callable[[str], object] = print) -> bool:
    """Run the source's optional `prepare(cfg, echo)` hook (build the scenes when they are missing or
    stale); True if it built anything. Sources read from files the user provides have no hook."""
    prepare = getattr(source_class(cfg.kind), "prepare", None)
    return bool(prepare(cfg, echo)) if prepare is not None else False


def open_source(cfg: SourceConfig, num_frames: int) -> SceneSource:
    """The source a workflow's `source:` section describes, sampling `num_frames` per scene."""
    only = tuple(cfg.scenes) if cfg.scenes is not None else None
    return source_class(cfg.kind)(Path(cfg.path), num_frames, only)


__all__ = ["ScanNetSource", "Scene", "SceneReadError", "SceneSource", "VideoSource", "open_source",
           "prepare_source", "source_class", "uniform_indices"]
