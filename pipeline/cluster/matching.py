"""Segments matched to ground-truth instances by triplet overlap (pure numpy).

A segmenter's labels are its own numbering (DESIGN.md, "Mask ids are not instance ids"): SAM 2's
are merge indices, split objects give two segments, merged neighbours one. Wherever a dataset names
objects, a segment stands for the ground-truth instance it was matched to here, never for the
instance whose id happens to equal its label.

Over the valid triplets of a scene, with s(n) the segment of triplet n (-1: none, or a segment that
may not be matched) and g(n) its ground-truth instance (-1: none):

    IoU(g, s) = |{n: g(n) = g, s(n) = s}| / |{n: g(n) = g or s(n) = s}|

Each instance is matched to at most one segment and each segment to at most one instance: pairs are
taken greedily by IoU, highest first (ties: smaller instance id, then smaller segment id), and a pair
below `min_iou` is never taken. Greedy rather than Hungarian: scipy is no dependency of p3d, and with
a threshold of 0.25 or more the two differ only where an instance overlaps two segments and a segment
two instances at similar IoUs, which the per-segment `match_iou` makes visible. An instance that gets
no segment is unmatched: records naming it are counted (trainer, eval), never silently dropped.

Legend: N valid triplets, S segments, G ground-truth instances, P overlapping (instance, segment) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NONE = -1


@dataclass
class Matching:
    instance_S: list[int | None]  # matched ground-truth instance id of each segment
    iou_S: list[float | None]  # IoU of that match
    instances: list[int]  # every ground-truth instance present among the triplets, sorted
    unmatched: list[int]  # instances matched to no segment, sorted

    @property
    def num_matched(self) -> int:
        return len(self.instances) - len(self.unmatched)

    def summary(self, min_iou: float) -> dict:
        """What meta.json records."""
        return {"instances": len(self.instances), "matched": self.num_matched,
                "unmatched": len(self.unmatched), "unmatched_ids": self.unmatched, "min_iou": min_iou}


def overlap_iou(segment_N: np.ndarray, gt_N: np.ndarray, num_segments: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(instance ids G, then per overlapping pair P: instance index, segment index, IoU)."""
    segment_N = np.asarray(segment_N).reshape(-1).astype(np.int64)
    gt_N = np.asarray(gt_N).reshape(-1).astype(np.int64)
    if segment_N.shape != gt_N.shape:
        raise ValueError(f"matching: {segment_N.size} segment ids but {gt_N.size} ground-truth ids")
    if segment_N.size and (segment_N.min() < NONE or segment_N.max() >= num_segments):
        raise ValueError(f"matching: segment ids must lie in -1..{num_segments - 1}")
    if gt_N.size and gt_N.min() < NONE:
        raise ValueError("matching: ground-truth ids below -1 (-1 means no instance)")
    instances_G, gt_index_N = np.unique(gt_N, return_inverse=True)
    if len(instances_G) and instances_G[0] == NONE:
        instances_G, gt_index_N = instances_G[1:], gt_index_N - 1  # -1 (none) becomes index -1
    num_instances = len(instances_G)
    size_G = np.bincount(gt_index_N[gt_index_N >= 0], minlength=num_instances)
    size_S = np.bincount(segment_N[segment_N >= 0], minlength=num_segments)
    both_N = (gt_index_N >= 0) & (segment_N >= 0)
    pair_N = gt_index_N[both_N] * num_segments + segment_N[both_N]
    pairs_P, inter_P = np.unique(pair_N, return_counts=True)
    g_P, s_P = pairs_P // num_segments, pairs_P % num_segments
    iou_P = inter_P / (size_G[g_P] + size_S[s_P] - inter_P)
    return instances_G, g_P, s_P, iou_P


def match_segments(segment_N: np.ndarray, gt_N: np.ndarray, num_segments: int, min_iou: float,
                   matchable_S: np.ndarray | None = None) -> Matching:
    """Match ground-truth instances to segments one-to-one (module docstring).

    `segment_N` and `gt_N` hold one entry per valid triplet; `matchable_S` (bool, S) marks the
    segments that may be matched (default: all); the triplets of the others count as in no segment.
    """
    if not 0 < min_iou <= 1:
        raise ValueError(f"matching: min_iou must be in (0, 1], got {min_iou}")
    if num_segments < 0:
        raise ValueError(f"matching: num_segments must be >= 0, got {num_segments}")
    segment_N = np.asarray(segment_N).reshape(-1).astype(np.int64)
    if matchable_S is not None:
        matchable_S = np.asarray(matchable_S, dtype=bool)
        if matchable_S.shape != (num_segments,):
            raise ValueError(f"matching: matchable has shape {matchable_S.shape}, expected ({num_segments},)")
        in_range = (segment_N >= 0) & (segment_N < num_segments)
        keep = np.zeros(segment_N.shape, bool)
        keep[in_range] = matchable_S[segment_N[in_range]]
        segment_N = np.where(keep | ~in_range, segment_N, NONE)  # out-of-range ids still raise below
    instances_G, g_P, s_P, iou_P = overlap_iou(segment_N, gt_N, num_segments)
    order = np.lexsort((s_P, g_P, -iou_P))  # IoU descending, then instance, then segment
    instance_S: list[int | None] = [None] * num_segments
    iou_S: list[float | None] = [None] * num_segments
    taken_G = np.zeros(len(instances_G), bool)
    for p in order:
        if iou_P[p] < min_iou:
            break
        g, s = int(g_P[p]), int(s_P[p])
        if taken_G[g] or instance_S[s] is not None:
            continue
        taken_G[g] = True
        instance_S[s], iou_S[s] = int(instances_G[g]), float(iou_P[p])
    return Matching(instance_S=instance_S, iou_S=iou_S, instances=[int(i) for i in instances_G],
                    unmatched=[int(i) for i in instances_G[~taken_G]])


def no_ground_truth(num_segments: int) -> Matching:
    """The matching of a scene without ground-truth instances (a video): nothing is matched."""
    return Matching(instance_S=[None] * num_segments, iou_S=[None] * num_segments, instances=[], unmatched=[])
