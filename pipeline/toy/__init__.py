"""The toy world and everything only it needs, fenced off from the real path.

The real path (schemas, pipeline's stages, the trainer) never imports this package: it reaches a toy
component by its name through the plugin registry (schemas/plugins.py; entry points in
pyproject.toml), as it reaches the real ones.

The world: procedural rooms of box-built furniture, rendered with full ground truth.
  shapes.py, layout.py, render.py  the furniture, a room's layout and camera walk, the renderer
  annotate.py  the questions and answers of a room
  world.py   `build_toy_world` writes the world (ScanNet's exported-frame layout), `make_scene` one room
  source.py  `ToySource` reads it back (source kind `toy`; its `prepare` hook renders a missing world)
  scenes.py  toy scenes rendered on demand (no files); `ensure_toy_world`, the source's prepare hook
Only the toy world needs:
  sim_vggt.py, sim_sam2.py  VGGT's and SAM 2's outputs simulated from the world's ground truth
             (geometry `sim_vggt`, segmenter `sim_sam2`)
  models.py  the tiny random-weight models of `toy:` model ids
  film.py    a toy scene filmed into a video with its ground-truth sidecar (what `p3d ask` reads)
  cli.py     `p3d toy`: render the world
"""
