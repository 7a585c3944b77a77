"""The toy world: procedural rooms of box-built furniture, rendered with full ground truth.

`build_toy_world` writes it (see world.py for the layout); `ToySource` reads it back.
"""

from pipeline.sources.toy.world import build_toy_world, make_scene, scene_id_for, split_for

__all__ = ["build_toy_world", "make_scene", "scene_id_for", "split_for"]
