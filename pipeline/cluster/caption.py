"""Scan2Cap allocation (paper, Table 5): the object being captioned gets N proxies (5 best).

A scene is clustered once as usual; then each instance segment's triplets alone are clustered
again into N proxies (FPS + FAISS nearest center in the same distance space, as `cluster_scene`
does). The shard stores those "focus" proxies beside the scene's sequence, so the variant for
captioning segment s is the scene's sequence with s's contiguous block swapped for its focus
block (`caption_variant`): every other proxy is identical across variants, the BFS order is
unchanged, and the store is read once per scene instead of once per object. Storing the variants
whole would cost K x S rows per scene (700 x ~50 for ScanNet); the focus blocks cost N x S.

N is exact (or all of a segment's triplets when it has fewer): the variant's sequence length is
K - k_s + N, where k_s is what the proportional allocation gave s. Training (trainer/rank_stream.py) and
`p3d predict` show a caption example its object's variant (`focus_scene`), every other example
the scene's own sequence.

Legend: N triplets, D feature dims, C distance-space dims, K proxies, M focus proxies (all
segments' blocks, in segment order), S segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.cluster.core import SceneProxies, distance_space
from pipeline.cluster.sampling import cluster_group, segment_mean
from schemas.config_cluster import ClusterConfig


@dataclass
class FocusProxies:
    feat_MD: np.ndarray  # float32
    xyz_M3: np.ndarray  # float32
    segment_M: np.ndarray  # int32, the segment (BFS rank) each focus proxy belongs to


def focus_proxies(feat: np.ndarray, xyz: np.ndarray, base: SceneProxies, num_proxies: int,
                  config: ClusterConfig, feat_mean_D: np.ndarray | None = None,
                  feat_std_D: np.ndarray | None = None) -> FocusProxies:
    """N proxies for each instance segment (label >= 0) of `base`, from the triplets `base` put in it.

    `feat` and `xyz` are the arrays `base` was clustered from (any leading shape). Unlabeled
    spatial groups are never captioned and get no focus block.
    """
    if num_proxies < 1:
        raise ValueError(f"caption_proxies must be >= 1, got {num_proxies}")
    assert base.segment_N is not None, "cluster_scene always sets segment_N"
    feat_ND = feat.reshape(-1, feat.shape[-1])
    xyz_N3 = xyz.reshape(-1, 3)
    if config.space == "xyz+feat" and feat_mean_D is None:
        # The scene's own whitening, as cluster_scene computes it without stats: over valid triplets.
        valid_feat = feat_ND[base.segment_N >= 0].astype(np.float32)
        feat_mean_D, feat_std_D = valid_feat.mean(0), valid_feat.std(0)
    order_N = np.argsort(base.segment_N, kind="stable")
    bounds_S = np.searchsorted(base.segment_N[order_N], np.arange(len(base.segments) + 1))
    feats, points, owners = [], [], []
    for s, segment in enumerate(base.segments):
        if segment.label < 0:
            continue
        idx = order_N[bounds_S[s]:bounds_S[s + 1]]
        k = min(num_proxies, len(idx))
        space_VC = distance_space(xyz_N3[idx].astype(np.float32),
                                  feat_ND[idx] if config.space == "xyz+feat" else None,
                                  config, feat_mean_D, feat_std_D)
        _, local = cluster_group(space_VC, k, seed=config.seed + s)
        # Gathered: one segment's rows are few, and segment_mean over the whole map would convert
        # all of it to float32 once per segment.
        feats.append(segment_mean(feat_ND[idx], local, k))
        points.append(segment_mean(xyz_N3[idx].astype(np.float32), local, k))
        owners.append(np.full(k, s, dtype=np.int32))
    dim = feat_ND.shape[1]
    if not feats:
        return FocusProxies(np.zeros((0, dim), np.float32), np.zeros((0, 3), np.float32),
                            np.zeros(0, np.int32))
    return FocusProxies(np.concatenate(feats).astype(np.float32), np.concatenate(points).astype(np.float32),
                        np.concatenate(owners))


def caption_variant(feat_KD: np.ndarray, xyz_K3: np.ndarray, segment_K: np.ndarray,
                    focus_feat_MD: np.ndarray, focus_xyz_M3: np.ndarray, focus_segment_M: np.ndarray,
                    segment: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene's (feat, xyz, segment) with `segment`'s proxies replaced by its focus block, in place
    in the BFS order (a shard's members `feat`, `xyz`, `segment` and `focus_*`)."""
    rows_K = np.flatnonzero(segment_K == segment)
    focus_M = np.flatnonzero(focus_segment_M == segment)
    if len(focus_M) == 0:
        raise ValueError(f"segment {segment} has no focus proxies (not an instance segment, or the set "
                         "was clustered without caption_proxies)")
    if len(rows_K) == 0 or np.any(np.diff(rows_K) != 1):
        raise ValueError(f"segment {segment}'s proxies are missing or not contiguous")
    start, stop = int(rows_K[0]), int(rows_K[-1]) + 1

    def splice(base, block):
        return np.concatenate([base[:start], block.astype(base.dtype), base[stop:]])

    return (splice(feat_KD, focus_feat_MD[focus_M]), splice(xyz_K3, focus_xyz_M3[focus_M]),
            splice(segment_K, focus_segment_M[focus_M]))


def captioned_segment(example) -> int | None:
    """The segment a caption example (trainer.examples.Example) describes; None for other tasks."""
    object_ids = example.meta.get("object_ids") if example.task == "caption" else None
    return int(object_ids[0]) if object_ids else None


def focus_scene(scene: dict, segment: int | None) -> dict:
    """A decoded shard sample as seen when `segment` is captioned: its focus block swapped in. The
    sample itself when `segment` is None or the set has no focus blocks for it."""
    focus_segment_M = scene.get("focus_segment")
    if segment is None or focus_segment_M is None or not (focus_segment_M == segment).any():
        return scene
    feat, xyz, segment_K = caption_variant(scene["feat"], scene["xyz"], scene["segment"], scene["focus_feat"],
                                           scene["focus_xyz"], focus_segment_M, segment)
    return dict(scene, feat=feat, xyz=xyz, segment=segment_K)
