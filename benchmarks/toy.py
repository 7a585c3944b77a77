"""Toy-world benchmark: the renderer per frame, culled (each part ray-cast only over its projected
screen rectangle) beside the brute-force baseline (every part against every pixel) measured in the
same run, then the whole default world (8 scenes x 48 frames at 240 x 320) written to a temp dir.

Figures are CPU seconds of this process (wall time on a shared machine says more about the
neighbours than about the code) plus wall seconds. Prints, asserts nothing.

  python benchmarks/toy.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 scenes x 12 frames for the world")
    args = parser.parse_args()

    from pipeline.toy.render import render
    from pipeline.toy.world import _box_scene, build_toy_world, make_scene
    from schemas.workflow import ToyWorldConfig

    cfg = ToyWorldConfig()
    scene = make_scene(1, cfg.model_copy(update={"frames": 12}))
    boxes = _box_scene(scene.layout)
    print(f"renderer: scene toy0001, {len(scene.layout.objects)} objects, {len(boxes.lo_B3)} parts, "
          f"{cfg.image_size[0]}x{cfg.image_size[1]}, {len(scene.poses_F44)} frames")
    for name, cull in (("baseline (all parts x all pixels)", False), ("culled (screen rectangles)", True)):
        cpu, wall = _timed(lambda: [render(boxes, p, scene.k_33, cfg.image_size, cull=cull)
                                    for p in scene.poses_F44])
        n = len(scene.poses_F44)
        print(f"  {name:36s} {1000 * cpu / n:7.1f} ms CPU/frame  {1000 * wall / n:7.1f} ms wall/frame")

    world = cfg.model_copy(update={"num_scenes": 2, "frames": 12}) if args.quick else cfg
    # Baseline: one process; then the default pool (one worker per core). CPU is this process's only.
    for label, workers in (("1 process (baseline)", 1), (f"{min(os.cpu_count() or 1, 8)} processes", None)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            cpu, wall = _timed(lambda: build_toy_world(root, root / "scenes", world, progress=lambda _: None,
                                                       workers=workers))
            size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
        print(f"world, {label}: {world.num_scenes} scenes x {world.frames} frames written in "
              f"{wall:.1f} s wall ({cpu:.1f} s CPU in the parent), {size_mb:.1f} MiB  "
              f"(rendering + JPEG/PNG encoding + records)")


if __name__ == "__main__":
    main()
