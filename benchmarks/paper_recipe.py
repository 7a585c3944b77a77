"""Cost of issue 18's feature-side recipe, each beside its baseline measured in the same run, one core.

1. Feature-map upsampling (`features.latent_grid`): bilinear 16 x 21 -> 32 x 42 of a 32-frame
   Qwen2.5-VL map (D = 3584) against the baseline the stage pays anyway without it, the float16
   cast of the encoder's map for the store; stored bytes per scene at both grids.
2. Scan2Cap focus blocks (`cluster.caption_proxies` = 5): `focus_proxies` on a clustered 32 x 42
   scene against (a) the scene's own `cluster_scene` and (b) the naive way of writing one variant
   per object, one `cluster_scene` per object (the measured one times the object count).
   The store read the naive way also repeats per object is not counted.
3. The metric-scale estimator (`metric_depth_scale`) on 32 frames of 448 x 588 against the pooled
   median (`estimate_scale`) over the same pixels.

    python benchmarks/paper_recipe.py [--dim 3584] [--repeats 3]

Prints, asserts nothing.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synthetic scenes are a test fixture (tests/)

from benchmarks._common import best_of  # noqa: E402


def bench_upsampling(dim: int, repeats: int) -> None:
    from pipeline.features.patchify import upsample_features

    rng = np.random.default_rng(0)
    feat = rng.standard_normal((32, 16, 21, dim), dtype=np.float32)
    base_s, _ = best_of(lambda: feat.astype(np.float16), repeats)
    up_s, up = best_of(lambda: upsample_features(feat, (32, 42), dtype=np.float16), repeats)
    print(f"upsampling, 32 frames, D={dim}:")
    print(f"  baseline float16 cast at 16x21  {base_s:7.3f} s   store {feat.size * 2 / 2**20:7.1f} MiB")
    print(f"  bilinear to 32x42 + cast         {up_s:7.3f} s   store {up.size * 2 / 2**20:7.1f} MiB")


def bench_focus(dim: int, repeats: int) -> None:
    import torch

    torch.set_num_threads(1)
    from pipeline.cluster.caption import focus_proxies
    from pipeline.cluster.core import cluster_scene
    from schemas.config_cluster import ClusterConfig
    from tests.synthetic_triplets import synthetic_scene

    scene = synthetic_scene(num_frames=32, h=32, w=42, dim=dim, num_objects=40, seed=0)
    params = ClusterConfig(proxies=700)

    def base():
        return cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw, config=params)

    base_s, proxies = best_of(base, repeats)
    focus_s, focus = best_of(lambda: focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, proxies, 5, params),
                              repeats)
    objects = sorted(set(focus.segment_M.tolist()))
    naive_s = base_s * len(objects)  # each variant is a whole cluster_scene
    print(f"Scan2Cap focus blocks, 32 frames of 32x42, D={dim}, K=700, N=5, {len(objects)} objects:")
    print(f"  the scene's own cluster_scene    {base_s:7.3f} s")
    print(f"  focus_proxies (all objects)      {focus_s:7.3f} s   ({len(focus.segment_M)} rows)")
    print(f"  naive: cluster_scene per object  {naive_s:7.3f} s   (the measured one x {len(objects)})")


def bench_scale(repeats: int) -> None:
    from pipeline.features.align import metric_depth_scale
    from pipeline.models.vggt.geometry import estimate_scale

    rng = np.random.default_rng(0)
    geometry = rng.uniform(0.5, 4.0, (32, 448, 588))
    model = 2.0 * geometry * rng.lognormal(0, 0.1, geometry.shape)
    pooled_s, pooled = best_of(lambda: estimate_scale(geometry, model), repeats)
    ours_s, ours = best_of(lambda: metric_depth_scale(model, geometry), repeats)
    print("metric scale, 32 frames of 448x588 (true 2.0, 10 % log-normal pixel noise):")
    print(f"  baseline pooled median           {pooled_s:7.3f} s   scale {pooled:.4f}")
    print(f"  median of per-frame medians      {ours_s:7.3f} s   scale {ours:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_upsampling(args.dim, args.repeats)
    bench_focus(args.dim, args.repeats)
    bench_scale(args.repeats)


if __name__ == "__main__":
    main()
