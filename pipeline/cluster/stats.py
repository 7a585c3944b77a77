"""`p3d stats`: dataset statistics of the triplet store, computed lazily with dask over the Zarr
arrays of every complete scene (one chunk per frame, so memory stays at a few frames).

Per-dimension feature mean and std are taken over valid triplets only (finite xyz), because only
those are clustered; the cluster stage uses them to whiten features in `xyz+feat` space.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from schemas.layout import stats_path as default_stats_path  # noqa: F401  (callers import it here)


def compute_stats(out: str | Path, scenes: list[str] | None = None) -> dict[str, Any]:
    import dask
    import dask.array as da

    from pipeline.features.store import list_scenes, read_scene, scene_path

    scene_ids = scenes if scenes is not None else list_scenes(out, complete_only=True)
    _raise_if_damaged(out, scenes or list_scenes(out, complete_only=False), scene_ids)
    if not scene_ids:
        raise ValueError(f"{out}/features: no complete scenes to compute stats over")
    sums, sq_sums, lazy_scenes, dims = [], [], {}, set()
    for scene_id in scene_ids:
        path = scene_path(out, scene_id)
        feat = da.from_zarr(str(path / "feat"))
        xyz = da.from_zarr(str(path / "xyz"))
        label = da.from_zarr(str(path / "label"))
        dims.add(int(feat.shape[-1]))
        valid = da.isfinite(xyz).all(axis=-1)
        feat64 = da.where(valid[..., None], feat.astype(np.float64), 0.0)
        axes = tuple(range(feat.ndim - 1))
        sums.append(feat64.sum(axis=axes))
        sq_sums.append((feat64 ** 2).sum(axis=axes))
        # Labels are small (one int per patch), so they come back whole for the unique count.
        lazy_scenes[scene_id] = {"valid": valid.sum(), "labeled": ((label >= 0) & valid).sum(),
                                 "label": da.where(valid, label, -1)}
    if len(dims) != 1:
        raise ValueError(f"{out}/features: scenes disagree on the feature dim: {sorted(dims)}")
    try:
        sums, sq_sums, computed = dask.compute(sums, sq_sums, lazy_scenes)
    except Exception:  # a chunk that cannot be decoded: read scene by scene for an error naming its file
        for scene_id in scene_ids:
            read_scene(out, scene_id)
        raise
    total = int(sum(int(c["valid"]) for c in computed.values()))
    if total == 0:
        raise ValueError(f"{out}/features: no valid triplets in any scene")
    mean = np.sum(sums, axis=0) / total
    var = np.maximum(np.sum(sq_sums, axis=0) / total - mean ** 2, 0.0)
    scenes_out = {scene_id: _scene_counts(c) for scene_id, c in computed.items()}
    num_triplets = sum(s["triplets"] for s in scenes_out.values())
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_scenes": len(scene_ids),
        "dim": dims.pop(),
        "num_triplets": num_triplets,
        "num_valid": total,
        "num_labeled": sum(s["labeled"] for s in scenes_out.values()),
        "nan_fraction": 1.0 - total / max(num_triplets, 1),
        "feat_mean": [float(v) for v in mean],
        "feat_std": [float(v) for v in np.sqrt(var)],
        "scenes": scenes_out,
    }


def _raise_if_damaged(out: str | Path, listed: list[str], complete: list[str]) -> None:
    """A damaged group is named, never skipped or read as fill values."""
    from pipeline.features.store import missing_chunks, unreadable_reason

    damaged = {s: r for s in listed if (r := unreadable_reason(out, s)) is not None}
    damaged.update({s: "; ".join(m) for s in complete if s not in damaged and (m := missing_chunks(out, s))})
    if damaged:
        raise ValueError("; ".join(f"scene {s}: {r}" for s, r in sorted(damaged.items()))
                         + " (re-run `p3d features --overwrite` on these scenes)")


def _scene_counts(computed: dict) -> dict[str, Any]:
    num = int(computed["label"].size)
    return {
        "triplets": num,
        "valid": int(computed["valid"]),
        "labeled": int(computed["labeled"]),
        "labels": int((np.unique(computed["label"]) >= 0).sum()),
        "nan_fraction": 1.0 - int(computed["valid"]) / max(num, 1),
    }


def write_stats(path: str | Path, stats: dict[str, Any]) -> Path:
    from schemas.io import write_json_atomic

    return write_json_atomic(path, stats, sort_keys=True)
