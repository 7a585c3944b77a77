"""`p3d inspect`: a short text summary of a proxy shard or of one scene (its triplet group and,
when clustered, its proxies), with the segments' matching to ground-truth instances: per segment
its label (the segmenter's own id), matched instance, category and match IoU, and the instances
no segment matched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def summarize_sample(scene_id: str, sample: dict[str, Any]) -> list[str]:
    meta = sample["meta"]
    segments = sample["segments"]
    labeled = [s for s in segments if s.label >= 0]
    sizes = [s.proxies for s in segments]
    lines = [
        f"{scene_id}: {meta.num_proxies}/{meta.budget} proxies x {meta.dim} dims, "
        f"{len(segments)} segments ({len(labeled)} labeled), {meta.num_valid_triplets} valid triplets",
        f"  proxies per segment: min {min(sizes, default=0)} median {int(np.median(sizes)) if sizes else 0} "
        f"max {max(sizes, default=0)}; space {meta.params.get('space')}, "
        f"grouping {meta.params.get('grouping')}",
        "  BFS order: " + ", ".join(
            f"{s.id}:{s.category or ('L' + str(s.label) if s.label >= 0 else 'unlabeled')}"
            for s in segments[:12]) + (" ..." if len(segments) > 12 else ""),
    ]
    lines += matching_lines(meta, segments)
    lines += [f"  note: {n}" for n in meta.notes]
    return lines


MAX_MATCH_ROWS = 40


def matching_lines(meta, segments) -> list[str]:
    if meta.matching is None:
        return ["  matching: no ground-truth instances in the store (instance ids and categories are null)"]
    m = meta.matching
    lines = [f"  matching (IoU >= {m.get('min_iou')}): {m.get('matched')} of {m.get('instances')} "
             f"ground-truth instances matched; unmatched: {m.get('unmatched_ids') or 'none'}",
             "    segment  label  instance  category  IoU"]
    labeled = [s for s in segments if s.label >= 0]
    for s in labeled[:MAX_MATCH_ROWS]:
        iou = "-" if s.match_iou is None else f"{s.match_iou:.2f}"
        instance = "-" if s.instance_id is None else str(s.instance_id)
        lines.append(f"    {s.id:7d}  {s.label:5d}  {instance:>8}  {s.category or '-':8}  {iou}")
    if len(labeled) > MAX_MATCH_ROWS:
        lines.append(f"    ... {len(labeled) - MAX_MATCH_ROWS} more labeled segments")
    return lines


def summarize_shard(path: str | Path) -> list[str]:
    from pipeline.cluster.shards import decode_sample, read_shard

    samples = read_shard(path)
    lines = [f"{path}: {len(samples)} scenes"]
    for key, members in samples.items():
        lines += summarize_sample(key, decode_sample(members, f"{path}:{key}"))
    return lines


def summarize_scene(out: str | Path, scene_id: str, name: str) -> list[str]:
    from pipeline.cluster.shards import load_scene_proxies
    from pipeline.features.store import open_group

    group = open_group(out, scene_id)
    label = np.asarray(group["label"][...])
    xyz = np.asarray(group["xyz"][...])
    valid = np.isfinite(xyz).all(-1)
    attrs = dict(group.attrs)
    num_frames, h, w = label.shape
    labels = np.unique(label[valid & (label >= 0)])
    lines = [
        f"{scene_id}: {num_frames} frames of {h}x{w} patches, D={group['feat'].shape[-1]}, "
        f"source {attrs.get('source', {}).get('kind', attrs.get('source'))}",
        f"  valid triplets {int(valid.sum())}/{valid.size} ({valid.mean():.1%}), "
        f"labeled {int((valid & (label >= 0)).sum())}, {len(labels)} labels, "
        f"{len(attrs.get('objects', []))} objects known, "
        f"ground-truth instances per patch: {'yes' if 'gt_label' in group else 'no'}",
    ]
    try:
        lines += summarize_sample(scene_id, load_scene_proxies(out, name, scene_id))
    except ValueError as e:
        lines.append(f"  proxies ({name}): none ({e})")
    return lines
