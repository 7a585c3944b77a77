"""VGGT inference throughput on CPU: frames per second of our implementation.

Random-weight models at a tiny and a mid size, a scene of S frames at VGGT's usual 392x518 input.
Each row is timed in the same run beside its baseline: float32 vs a bf16 aggregator (the heads
always run in float32), split into aggregator and heads time. Figures only; nothing is asserted.

    python benchmarks/vggt.py [--frames 4] [--repeats 2] [--height 392 --width 518]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from pipeline.models.vggt import VGGTConfig, random_vggt
from pipeline.models.vggt.config import AggregatorConfig, CameraHeadConfig, DPTHeadConfig


def mid_config() -> VGGTConfig:
    """DINOv2-S patch embed (12 blocks), 8 alternating layers of width 384, slim heads."""
    dpt = DPTHeadConfig(dim_in=768, features=64, out_channels=(48, 96, 192, 192),
                        intermediate_layer_idx=(1, 3, 5, 7))
    return VGGTConfig(
        aggregator=AggregatorConfig(embed_dim=384, depth=8, num_heads=6, patch_embed="dinov2_vits14_reg"),
        camera_head=CameraHeadConfig(dim_in=768, trunk_depth=2, num_heads=6),
        depth_head=dpt,
        point_head=replace(dpt, output_dim=4, activation="inv_log"),
    )


def time_split(model, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` seconds of (aggregator, heads) for one scene; one warm-up run first."""
    from pipeline.models.vggt.aggregator import PATCH_START_IDX

    image_hw = tuple(images.shape[-2:])
    best_agg = best_heads = float("inf")
    for run in range(repeats + 1):
        start = time.perf_counter()
        tokens = [t.float() for t in model.aggregator(images)]
        mid = time.perf_counter()
        model.camera_head(tokens[-1])
        model.depth_head(tokens, image_hw, PATCH_START_IDX)
        model.point_head(tokens, image_hw, PATCH_START_IDX)
        end = time.perf_counter()
        if run > 0:
            best_agg, best_heads = min(best_agg, mid - start), min(best_heads, end - mid)
    return best_agg, best_heads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--width", type=int, default=518)
    args = parser.parse_args()
    images = torch.rand(1, args.frames, 3, args.height, args.width)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"scene {args.frames} x {args.height}x{args.width}")
    print(f"{'config':<6} {'params':>8} {'aggregator':<10} {'frames/s':>9} {'s/scene':>8} "
          f"{'aggregator s':>12} {'heads s':>8}")
    for name, cfg in (("tiny", VGGTConfig.tiny()), ("mid", mid_config())):
        model = random_vggt(cfg)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for dtype in (torch.float32, torch.bfloat16):
            model.aggregator.to(dtype)
            with torch.inference_mode():
                agg, heads = time_split(model, images, args.repeats)
            total = agg + heads
            print(f"{name:<6} {params:>7.1f}M {str(dtype).split('.')[1]:<10} "
                  f"{args.frames / total:>9.2f} {total:>8.2f} {agg:>12.2f} {heads:>8.2f}")


if __name__ == "__main__":
    main()
