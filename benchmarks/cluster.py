"""Cluster-stage benchmark: `cluster_scene` on paper-scale synthetic scenes, one core, beside a
straightforward baseline measured in the same run.

Scenes: 32 frames of 16x21 and of 32x42 patches, D = 1280 (Qwen2.5-VL ViT) and 3584 (LLM width),
K = 700, power-law group sizes (tests/synthetic_triplets.py). The baseline is what one writes first:
per group, FPS and nearest-center assignment with torch.cdist, then each proxy's mean with a
boolean mask, in a Python loop. Peak memory is the resident high-water mark above the input
arrays (Linux /proc; reset before each run). Prints, asserts nothing.

  python benchmarks/cluster.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import os

# One core: the figure is per core, and the stage gets its parallelism from Ray across scenes.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synthetic scenes are a test fixture (tests/)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _measure(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB above the resident set at the start)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    times, peak = [], 0.0
    for _ in range(repeats):
        if libc is not None:
            libc.malloc_trim(0)  # hand freed heap back, else reused pages hide the new peak
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        base = _rss_kib("VmRSS:")
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        peak = max(peak, (_rss_kib("VmHWM:") - base) / 1024)
    return float(np.median(times)), peak


def baseline_torch(feat, xyz, label, budget):
    """The straightforward version: torch loops per group and per proxy."""
    import torch

    from pipeline.cluster.allocation import allocate_proxies

    feat_t = torch.from_numpy(feat.reshape(-1, feat.shape[-1]))
    xyz_t = torch.from_numpy(xyz.reshape(-1, 3))
    label_t = torch.from_numpy(label.reshape(-1))
    valid = torch.isfinite(xyz_t).all(1)
    labels = torch.unique(label_t[valid])
    members = [torch.nonzero(valid & (label_t == lab)).squeeze(1) for lab in labels]
    alloc = allocate_proxies(np.array([len(m) for m in members]), budget, 1)
    out_feat, out_xyz = [], []
    for idx, k in zip(members, alloc):
        pts = xyz_t[idx]
        centers = [0]
        dist = torch.cdist(pts, pts[:1]).squeeze(1)
        for _ in range(int(k) - 1):
            nxt = int(torch.argmax(dist))
            centers.append(nxt)
            dist = torch.minimum(dist, torch.cdist(pts, pts[nxt:nxt + 1]).squeeze(1))
        assign = torch.cdist(pts, pts[centers]).argmin(1)
        for c in range(int(k)):
            mask = assign == c
            out_feat.append(feat_t[idx][mask].float().mean(0))
            out_xyz.append(pts[mask].mean(0))
    return torch.stack(out_feat), torch.stack(out_xyz)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16x21 only, baseline once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=int, default=700)
    args = parser.parse_args()

    import faiss
    import torch

    from pipeline.cluster.core import cluster_scene
    from schemas.config_cluster import ClusterConfig
    from tests.synthetic_triplets import synthetic_scene

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    grids = [(16, 21)] if args.quick else [(16, 21), (32, 42)]
    dims = [1280] if args.quick else [1280, 3584]
    print(f"cluster_scene vs torch baseline, 1 core, K={args.budget}, 32 frames, faiss {faiss.__version__}")
    print(f"{'scene':>22} {'groups':>6} | {'p3d ms':>8} {'scenes/s':>8} {'peak MiB':>8} | "
          f"{'base ms':>8} {'scenes/s':>8} {'peak MiB':>8} | {'speedup':>7}")
    for h, w in grids:
        for dim in dims:
            scene = synthetic_scene(num_frames=32, h=h, w=w, dim=dim, num_objects=60, seed=1)
            arrays = (scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw)
            params = ClusterConfig(proxies=args.budget)
            result = cluster_scene(*arrays, config=params)  # warm-up (imports, FAISS init)
            ours, ours_mem = _measure(lambda: cluster_scene(*arrays, config=params), args.repeats)
            base_repeats = 1 if args.quick or h * w > 400 else min(args.repeats, 2)
            base, base_mem = _measure(lambda: baseline_torch(*arrays, args.budget), base_repeats)
            print(f"{f'32x{h}x{w} D={dim}':>22} {len(result.segments):>6} | {ours * 1e3:8.1f} "
                  f"{1 / ours:8.2f} {ours_mem:8.1f} | {base * 1e3:8.1f} {1 / base:8.2f} "
                  f"{base_mem:8.1f} | {base / ours:6.1f}x")
            for space, grouping in (("xyz", False), ("xyz+feat", True)):
                if h * w > 400 and space == "xyz+feat":
                    continue
                p = ClusterConfig(proxies=args.budget, space=space, grouping=grouping)
                t, mem = _measure(lambda: cluster_scene(*arrays, config=p), 1)
                label = f"{space}{'' if grouping else ', no grouping'}"
                print(f"{'  ablation ' + label:<29} | {t * 1e3:8.1f} {1 / t:8.2f} {mem:8.1f} |")
            scene = arrays = None  # free this scene before building the next one


if __name__ == "__main__":
    main()
