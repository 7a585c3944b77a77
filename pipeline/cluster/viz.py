"""`p3d viz`: one scene's proxies drawn to a PNG: a top view and a 3D view. Proxies of labeled
segments are coloured by segment and named; unlabeled (background) proxies are grey, so objects
stand out. The BFS path through the segment centers is coloured by sequence position (dark = early,
yellow = late) and the start is starred, so the serialization can be read off the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schemas.io import atomic_open

_MAX_LABELLED = 60  # beyond this, per-segment text turns into noise


def draw_proxies(sample: dict[str, Any], png: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    xyz_K3 = sample["xyz"].astype(np.float64)
    segment_K = sample["segment"]
    segments = sample["segments"]
    num_seg = len(segments)
    centers_S3 = np.array([s.center for s in segments]) if segments else np.zeros((0, 3))
    labeled_S = np.array([s.label >= 0 for s in segments], dtype=bool)
    fg_K = labeled_S[segment_K] if num_seg else np.zeros(len(segment_K), bool)
    colors_K = plt.get_cmap("tab20")(segment_K % 20)
    path_cmap = plt.get_cmap("viridis")
    path_colors = path_cmap(np.linspace(0, 1, max(num_seg - 1, 1)))
    steps = np.stack([centers_S3[:-1], centers_S3[1:]], axis=1) if num_seg > 1 else np.zeros((0, 2, 3))

    fig = plt.figure(figsize=(16, 7.5), dpi=110)
    top = fig.add_subplot(1, 2, 1)
    top.scatter(xyz_K3[~fg_K, 0], xyz_K3[~fg_K, 1], color="0.78", s=7, linewidths=0,
                label="unlabeled (background) proxies")
    top.scatter(xyz_K3[fg_K, 0], xyz_K3[fg_K, 1], c=colors_K[fg_K], s=18, linewidths=0,
                label="object proxies (colour = segment)")
    top.add_collection(LineCollection(steps[:, :, :2], colors=path_colors, linewidths=1.2, alpha=0.85))
    if num_seg:
        top.scatter(*centers_S3[0, :2], marker="*", s=280, color="red", edgecolor="k", zorder=5,
                    label="BFS start (segment nearest origin)")
        top.scatter([0], [0], marker="+", s=140, color="k", zorder=5, label="origin")
    named = [s for s in segments if s.label >= 0]
    if len(named) <= _MAX_LABELLED:
        for seg in named:
            top.annotate(f"{seg.id} {seg.category or 'L' + str(seg.label)}", seg.center[:2], fontsize=7.5,
                         ha="center", va="bottom",
                         bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.75, lw=0))
    top.set_aspect("equal", adjustable="datalim")
    top.set_xlabel("x (m)")
    top.set_ylabel("y (m)")
    top.set_title("top view (label: BFS position + category)")
    top.legend(loc="upper right", fontsize=7.5, framealpha=0.85)
    top.grid(alpha=0.3)
    mappable = plt.cm.ScalarMappable(cmap=path_cmap, norm=plt.Normalize(0, max(num_seg - 1, 1)))
    fig.colorbar(mappable, ax=top, fraction=0.04, pad=0.02, label="BFS position of segment")

    _draw_3d_view(fig.add_subplot(1, 2, 2, projection="3d"), xyz_K3, fg_K, colors_K, steps, path_colors)
    fig.suptitle(title or f"{len(xyz_K3)} proxies, {num_seg} segments")
    fig.tight_layout()
    png = Path(png)
    with atomic_open(png, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return png


def _draw_3d_view(view, xyz_K3, fg_K, colors_K, steps, path_colors) -> None:
    """The right panel: the top view's proxies and BFS path in 3D, without the labels."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    view.scatter(xyz_K3[~fg_K, 0], xyz_K3[~fg_K, 1], xyz_K3[~fg_K, 2], color="0.8", s=5, linewidths=0)
    view.scatter(xyz_K3[fg_K, 0], xyz_K3[fg_K, 1], xyz_K3[fg_K, 2], c=colors_K[fg_K], s=12, linewidths=0)
    view.add_collection3d(Line3DCollection(steps, colors=path_colors, linewidths=0.9, alpha=0.8))
    view.set_xlabel("x (m)")
    view.set_ylabel("y (m)")
    view.set_zlabel("z (m)")
    view.set_title("3D view")
