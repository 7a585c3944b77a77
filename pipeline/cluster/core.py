"""`cluster_scene`: one scene's triplets in, its serialized proxy sequence out (pure: no files).

Steps (DESIGN.md, "The method, mapped to code"): drop invalid triplets; group by label (unlabeled
patches by voxel cell); merge the smallest groups if the budget cannot cover every group's
minimum; allocate proxies; FPS + FAISS nearest-center assignment inside each group in the chosen
distance space; average features and points per proxy; order segments by BFS and keep each
segment's proxies contiguous, in FPS order.

Without grouping (the ablation) FPS + k-NN runs over the whole scene, ignoring labels, so proxies may
straddle objects; segments are then formed afterwards from the proxies' majority labels, so objects
stay referenceable the same way, and an object that is no proxy's majority is absorbed like a
budget merge.

Legend: N triplets (valid ones after filtering), D feature dims, C distance-space dims,
K proxies, S segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.cluster.allocation import allocate_proxies
from pipeline.cluster.grouping import NO_LABEL, Groups, group_by_label, merge_to_fit
from pipeline.cluster.sampling import cluster_group, segment_mean
from pipeline.cluster.serialize import bfs_order
from schemas.config_cluster import ClusterConfig


@dataclass
class Segment:
    label: int  # primary instance label, -1 for unlabeled spatial groups
    merged_labels: list[int]
    size: int  # valid triplets
    proxies: int
    center: np.ndarray  # float64 3, mean of member points
    box_min: np.ndarray
    box_max: np.ndarray


@dataclass
class SceneProxies:
    feat_KD: np.ndarray  # float32
    xyz_K3: np.ndarray  # float32
    segment_K: np.ndarray  # int32, index into `segments`, which are in BFS order
    segments: list[Segment]
    num_triplets: int
    num_valid: int
    num_groups_initial: int
    merges: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # int32 N (every input triplet): the segment it belongs to, -1 for invalid ones and those whose
    # group got no proxy; the cluster driver matches segments to ground-truth instances through it.
    segment_N: np.ndarray | None = None

    @property
    def num_proxies(self) -> int:
        return len(self.segment_K)


def distance_space(xyz_N3: np.ndarray, feat_ND: np.ndarray, config: ClusterConfig,
                   feat_mean_D: np.ndarray | None, feat_std_D: np.ndarray | None) -> np.ndarray:
    """The points FPS and the nearest-center search measure distances in (C = 3 or 3 + D)."""
    if config.space == "xyz":
        return np.ascontiguousarray(xyz_N3, dtype=np.float32)
    feat = feat_ND.astype(np.float32)
    mean = feat.mean(0) if feat_mean_D is None else np.asarray(feat_mean_D, np.float32)
    std = feat.std(0) if feat_std_D is None else np.asarray(feat_std_D, np.float32)
    # Whitened features have unit variance per dim, so their squared norm grows like D; the
    # 1/sqrt(D) keeps them on the scale of metres and feat_weight then means what it says.
    scale = config.feat_weight / np.sqrt(feat.shape[1])
    white = (feat - mean) / np.maximum(std, 1e-6) * scale
    return np.ascontiguousarray(np.concatenate([xyz_N3.astype(np.float32), white], axis=1))


def _allocate(groups: Groups, xyz_N3: np.ndarray, config: ClusterConfig,
              notes: list[str]) -> tuple[Groups, np.ndarray]:
    budget, minimum = config.proxies, config.min_per_group
    if config.per_object is None:
        max_groups = budget // max(minimum, 1)
        if groups.num_groups > max_groups:
            before = groups.num_groups
            merge_to_fit(groups, xyz_N3, max_groups)
            notes.append(f"merged {before - groups.num_groups} smallest groups into spatial "
                         f"neighbours: {before} groups > {max_groups} allowed by budget {budget} "
                         f"with min_per_group {minimum}")
        return groups, allocate_proxies(groups.sizes(), budget, minimum)
    # Captioning ablation: each object gets exactly per_object proxies (or all its triplets);
    # unlabeled groups share whatever budget is left.
    sizes = groups.sizes()
    labeled = np.array([groups.primary_label(g) != NO_LABEL for g in range(groups.num_groups)], bool)
    alloc = np.zeros(groups.num_groups, dtype=np.int64)
    alloc[labeled] = np.minimum(sizes[labeled], config.per_object)
    left = budget - int(alloc.sum())
    if (~labeled).any():
        if left > 0:
            alloc[~labeled] = _allocate_subset(sizes[~labeled], left, minimum)
        else:
            notes.append(f"per_object {config.per_object}: objects use the whole budget; "
                         f"{int(sizes[~labeled].sum())} unlabeled triplets get no proxies")
    if alloc.sum() > budget:
        notes.append(f"per_object {config.per_object} x {int(labeled.sum())} objects gives "
                     f"{int(alloc.sum())} proxies, over the budget {budget}")
    return groups, alloc


def _allocate_subset(sizes: np.ndarray, budget: int, minimum: int) -> np.ndarray:
    """Allocation for unlabeled groups under per_object; too many groups share by size alone."""
    if np.minimum(sizes, minimum).sum() > budget:
        return allocate_proxies(sizes, budget, 0)
    return allocate_proxies(sizes, budget, minimum)


def _segments_from_proxy_labels(label_V: np.ndarray, proxy_V: np.ndarray, xyz_K3: np.ndarray,
                                config: ClusterConfig, notes: list[str]) -> tuple[Groups, np.ndarray]:
    """No-grouping ablation: segments of whole proxies, (groups over triplets, group of each proxy).

    A proxy takes the majority label of its members (ties: the smallest label, -1 included).
    Proxies sharing a label form a segment; unlabeled proxies are grouped by the voxel cell of
    their position, as unlabeled patches are in grouping mode. A labelled instance that is no
    proxy's majority is absorbed into the segment holding most of its triplets (a merge, so the
    trainer still refers to it through that segment, as after a budget merge)."""
    num_proxies = len(xyz_K3)
    labels_L, label_V_L = np.unique(label_V, return_inverse=True)
    num_labels = len(labels_L)
    counts_KL = np.bincount(proxy_V * num_labels + label_V_L,
                            minlength=num_proxies * num_labels).reshape(num_proxies, num_labels)
    majority_K = labels_L[np.argmax(counts_KL, axis=1)]
    # Every member sits at its proxy's position, so a group is always a union of whole proxies.
    groups = group_by_label(xyz_K3[proxy_V], majority_K[proxy_V], config.unlabeled_cell,
                            config.unlabeled_min_size)
    proxy_group_K = np.empty(num_proxies, dtype=np.int64)
    proxy_group_K[proxy_V] = groups.group_N
    counts_GL = np.bincount(groups.group_N * num_labels + label_V_L,
                            minlength=groups.num_groups * num_labels).reshape(-1, num_labels)
    absorbed = [int(i) for i in np.flatnonzero((labels_L != NO_LABEL) & ~np.isin(labels_L, majority_K))]
    for i in absorbed:
        g = int(np.argmax(counts_GL[:, i]))
        groups.merges.append({"labels": [int(labels_L[i])], "into": sorted(groups.label_sizes[g])})
        groups.label_sizes[g][int(labels_L[i])] = int(counts_GL[g, i])
    # An unlabeled cell that absorbs an instance takes its label, as in grouping mode.
    own = {groups.primary_label(g) for g in range(groups.num_groups)}
    lost = [int(labels_L[i]) for i in absorbed if labels_L[i] not in own]
    notes.append(f"no grouping: segments are proxies sharing their members' majority label; "
                 f"{len(lost)} of {int((labels_L != NO_LABEL).sum())} labelled instances got no "
                 f"segment of their own (absorbed into a neighbour, see merges): {lost}")
    return groups, proxy_group_K


def cluster_scene(feat: np.ndarray, xyz: np.ndarray, label: np.ndarray, budget: int | None = None,
                  config: ClusterConfig | None = None, *, feat_mean_D: np.ndarray | None = None,
                  feat_std_D: np.ndarray | None = None, scene_id: str = "") -> SceneProxies:
    """Turn one scene's triplets (any leading shape: F x h x w x ... or N x ...) into proxies."""
    config = config or ClusterConfig()
    if budget is not None and budget != config.proxies:
        config = ClusterConfig.model_validate({**config.model_dump(), "proxies": budget})
    where = f"scene {scene_id}: " if scene_id else ""
    feat_ND = feat.reshape(-1, feat.shape[-1])
    xyz_N3 = xyz.reshape(-1, 3)
    label_N = label.reshape(-1)
    if xyz.shape[-1] != 3 or not (len(feat_ND) == len(xyz_N3) == len(label_N)):
        raise ValueError(f"{where}feat {feat.shape}, xyz {xyz.shape} and label {label.shape} "
                         "must share their leading shape (xyz ending in 3)")
    valid_N = np.isfinite(xyz_N3).all(axis=1)
    result = _cluster_valid(feat_ND, xyz_N3, label_N, valid_N, config, feat_mean_D, feat_std_D, where)
    if not np.isfinite(result.feat_KD).all():
        # Rare: a non-finite feature. Checking every feature up front costs as much as the rest of
        # the stage, so only now drop the offending triplets and redo the scene.
        bad_N = ~np.isfinite(feat_ND).all(axis=1)
        result = _cluster_valid(feat_ND, xyz_N3, label_N, valid_N & ~bad_N, config, feat_mean_D,
                                feat_std_D, where)
        result.notes.append(f"dropped {int((bad_N & valid_N).sum())} triplets with non-finite features")
    return result


def _cluster_valid(feat_ND, xyz_N3, label_N, valid_N, config: ClusterConfig, feat_mean_D,
                   feat_std_D, where: str) -> SceneProxies:
    idx_valid = np.flatnonzero(valid_N)
    num_valid = len(idx_valid)
    if num_valid == 0:
        raise ValueError(f"{where}no valid triplets (every point is NaN)")
    notes: list[str] = []
    xyz_V3 = xyz_N3[idx_valid].astype(np.float32)
    label_V = label_N[idx_valid]
    if config.grouping:
        groups = group_by_label(xyz_V3, label_V, config.unlabeled_cell, config.unlabeled_min_size)
    else:
        groups = Groups(group_N=np.zeros(num_valid, np.int64), label_sizes=[{NO_LABEL: num_valid}],
                        num_initial=1)
    num_initial = groups.num_groups
    groups, alloc_G = _allocate(groups, xyz_V3, config, notes)
    if num_valid < config.proxies:
        notes.append(f"{num_valid} valid triplets < budget {config.proxies}: every triplet is a proxy")
    feat_VD = feat_ND[idx_valid] if config.space == "xyz+feat" else None
    space_VC = distance_space(xyz_V3, feat_VD, config, feat_mean_D, feat_std_D)

    proxy_V, proxy_group_K = _cluster_each_group(groups, alloc_G, space_VC, config.seed)
    num_proxies = len(proxy_group_K)
    used = proxy_V >= 0
    # Means straight from the full feature map (rows named), so it is never gathered or copied.
    feat_KD = segment_mean(feat_ND, proxy_V[used], num_proxies, rows_N=idx_valid[used])
    xyz_K3 = segment_mean(xyz_V3[used], proxy_V[used], num_proxies)
    if not config.grouping:
        groups, proxy_group_K = _segments_from_proxy_labels(label_V, proxy_V, xyz_K3, config, notes)
        alloc_G = np.bincount(proxy_group_K, minlength=groups.num_groups)
    segments, rank_of_group = _segments_in_bfs_order(groups, alloc_G, xyz_V3, config.bfs_neighbors)
    segment_K = rank_of_group[proxy_group_K]
    segment_N = np.full(len(valid_N), -1, dtype=np.int32)
    segment_N[idx_valid] = rank_of_group[groups.group_N]
    # Stable sort keeps FPS order inside each segment while putting segments in BFS order.
    perm = np.argsort(segment_K, kind="stable")
    return SceneProxies(
        feat_KD=feat_KD[perm], xyz_K3=xyz_K3[perm], segment_K=segment_K[perm].astype(np.int32),
        segments=segments, num_triplets=len(valid_N), num_valid=num_valid,
        num_groups_initial=num_initial, merges=groups.merges, notes=notes, segment_N=segment_N,
    )


def _group_members(groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(members, bounds): group g's point indices are members[bounds[g]:bounds[g + 1]]."""
    return np.argsort(groups.group_N, kind="stable"), np.r_[0, np.cumsum(groups.sizes())]


def _cluster_each_group(groups: Groups, alloc_G, space_VC, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(proxy_V, proxy_group_K): group g's alloc_G[g] proxies by FPS, numbered group by group and in FPS
    order within a group; proxy_V is -1 on the points of groups given none."""
    proxy_V = np.full(len(space_VC), -1, dtype=np.int64)
    members, bounds = _group_members(groups)
    proxy_group: list[int] = []
    for g in range(groups.num_groups):
        k = int(alloc_G[g])
        if k == 0:
            continue
        idx = members[bounds[g]:bounds[g + 1]]
        _, local = cluster_group(space_VC[idx], k, seed=seed + g)
        proxy_V[idx] = len(proxy_group) + local
        proxy_group += [g] * k
    return proxy_V, np.asarray(proxy_group, dtype=np.int64)


def _segments_in_bfs_order(groups: Groups, alloc_G, xyz_V3, bfs_neighbors: int
                           ) -> tuple[list[Segment], np.ndarray]:
    """The groups that received proxies as segments in BFS order of their centers, and each group's
    rank in that order (-1: a group with no proxies)."""
    members, bounds = _group_members(groups)
    seg_groups = [g for g in range(groups.num_groups) if alloc_G[g] > 0]
    segments: list[Segment] = []
    for g in seg_groups:
        pts = xyz_V3[members[bounds[g]:bounds[g + 1]]].astype(np.float64)
        segments.append(Segment(label=groups.primary_label(g), merged_labels=groups.merged_labels(g),
                                size=len(pts), proxies=int(alloc_G[g]), center=pts.mean(0),
                                box_min=pts.min(0), box_max=pts.max(0)))
    order_S = bfs_order(np.stack([s.center for s in segments]), bfs_neighbors)
    rank_of_group = np.full(groups.num_groups, -1, dtype=np.int64)
    rank_of_group[np.asarray(seg_groups)[order_S]] = np.arange(len(order_S))
    return [segments[i] for i in order_S], rank_of_group
