"""`p3d viz`: one scene's proxies drawn to a PNG: a top view and a 3D view coloured by segment,
with the BFS path through the segment centers (start marked), so the serialization can be read
off the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_MAX_LABELLED = 60  # beyond this, per-segment text turns into noise


def draw_proxies(sample: dict[str, Any], png: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xyz_K3 = sample["xyz"].astype(np.float64)
    segment_K = sample["segment"]
    segments = sample["segments"]
    centers_S3 = np.array([s.center for s in segments]) if segments else np.zeros((0, 3))
    cmap = plt.get_cmap("tab20")
    colors_K = cmap(segment_K % 20)

    fig = plt.figure(figsize=(15, 7), dpi=110)
    top = fig.add_subplot(1, 2, 1)
    top.scatter(xyz_K3[:, 0], xyz_K3[:, 1], c=colors_K, s=14, linewidths=0)
    top.plot(centers_S3[:, 0], centers_S3[:, 1], "-", color="0.25", lw=0.9, alpha=0.8, label="BFS path")
    if len(centers_S3):
        top.scatter(*centers_S3[0, :2], marker="*", s=260, color="red", edgecolor="k", zorder=5,
                    label="BFS start (nearest origin)")
        top.scatter([0], [0], marker="+", s=120, color="k", zorder=5, label="origin")
    if len(segments) <= _MAX_LABELLED:
        for seg in segments:
            text = f"{seg.id}" + (f" {seg.category}" if seg.category else "")
            top.annotate(text, seg.center[:2], fontsize=7, ha="center", va="bottom",
                         bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    top.set_aspect("equal", adjustable="datalim")
    top.set_xlabel("x (m)")
    top.set_ylabel("y (m)")
    top.set_title("top view: proxies by segment, BFS order")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)

    view = fig.add_subplot(1, 2, 2, projection="3d")
    view.scatter(xyz_K3[:, 0], xyz_K3[:, 1], xyz_K3[:, 2], c=colors_K, s=8, linewidths=0)
    view.plot(centers_S3[:, 0], centers_S3[:, 1], centers_S3[:, 2], "-", color="0.25", lw=0.8)
    view.set_xlabel("x")
    view.set_ylabel("y")
    view.set_zlabel("z")
    view.set_title("3D view")
    fig.suptitle(title or f"{len(xyz_K3)} proxies, {len(segments)} segments")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)
    return png
