"""One registry for every component a workflow names by a word: Python entry points. It lives in
schemas/ because the workflow model checks names against it (schemas imports no stage).

A workflow names its scene source (`source.kind`), its networks (`features.encoder.kind`,
`geometry.kind`, `segmenter.kind`, `depth_model.kind`) and its model ids' schemes (`random:`, `toy:`)
by a name. Each name is an entry point that pyproject.toml declares in one group below, pointing at
the object the caller loads ("module:attribute"); the module is imported only when that name is used,
so `p3d --help` and `schemas` pull in neither torch nor the toy world, and the real path reaches the
toy world (pipeline/toy) only through this registry. Real and toy components register the same way.

Entry points come from the installed package's metadata: after editing pyproject.toml, re-install
(`pip install -e . --no-deps`). Ray workers read the same metadata in their own process.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

SOURCES = "p3d.sources"  # source kind -> SceneSource class (optional `prepare(source_cfg, echo)` hook)
ENCODERS = "p3d.encoders"  # each backend factory takes (config section, data_root, device)
GEOMETRY = "p3d.geometry"
SEGMENTERS = "p3d.segmenters"
DEPTH_MODELS = "p3d.depth_models"
MODEL_IDS = "p3d.model_ids"  # id scheme `<name>:` -> resolver(model, data_root, family) -> a folder
ROOM_GENERATORS = "p3d.room_generators"  # name -> room(seed, index) -> (scene dict, its records)

# What a name of each group is called in an error message.
WHAT = {SOURCES: "source kind", ENCODERS: "encoder kind", GEOMETRY: "geometry kind",
        SEGMENTERS: "segmenter kind", DEPTH_MODELS: "depth model kind", MODEL_IDS: "model id scheme",
        ROOM_GENERATORS: "room generator"}


class UnknownPlugin(ValueError):
    """A name no installed plugin provides."""


@functools.cache
def _group(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """The names registered in `group`, sorted."""
    return sorted(_group(group))


def check_name(group: str, name: str) -> str:
    """`name` when a plugin provides it, else `UnknownPlugin` listing the names that exist."""
    if name not in _group(group):
        known = ", ".join(names(group)) or "none (is p3d installed? pip install -e .)"
        raise UnknownPlugin(f"unknown {WHAT.get(group, group)} {name!r}; known: {known}")
    return name


def load(group: str, name: str) -> Any:
    """The object the plugin `name` of `group` points at (its module imported now)."""
    return _group(group)[check_name(group, name)].load()
