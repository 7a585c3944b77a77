"""Semantic grouping of triplets (paper eq. 1) and spatial merging of groups.

Triplets are grouped by instance label. Unlabeled patches (label -1) are grouped by the voxel cell
of side `unlabeled_cell` metres they fall in, so background never becomes one giant group; cells
with fewer than `unlabeled_min_size` triplets join the nearest unlabeled cell. When the budget
cannot give every group its minimum, the smallest groups join their spatially nearest group until
it can; each merge is recorded, never silent.

Legend: N valid triplets, G groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_LABEL = -1


@dataclass
class Groups:
    """Group membership of the valid triplets of one scene."""

    group_N: np.ndarray  # int64, group index of each valid triplet, 0..G-1
    label_sizes: list[dict[int, int]]  # per group: original label -> triplets (-1 = unlabeled)
    num_initial: int  # groups before budget merging
    merges: list[dict] = field(default_factory=list)  # {"labels": [...], "into": [...]}

    @property
    def num_groups(self) -> int:
        return len(self.label_sizes)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.group_N, minlength=self.num_groups)

    def primary_label(self, g: int) -> int:
        """The labeled member with most triplets; -1 when the group holds only unlabeled cells."""
        labeled = [(n, -lab) for lab, n in self.label_sizes[g].items() if lab != NO_LABEL]
        return -max(labeled)[1] if labeled else NO_LABEL

    def merged_labels(self, g: int) -> list[int]:
        primary = self.primary_label(g)
        return sorted(lab for lab in self.label_sizes[g] if lab not in (NO_LABEL, primary))


def group_by_label(xyz_N3: np.ndarray, label_N: np.ndarray, unlabeled_cell: float,
                   unlabeled_min_size: int = 1) -> Groups:
    """Labeled groups in ascending label order, then unlabeled voxel cells in cell order."""
    if unlabeled_cell <= 0:
        raise ValueError(f"unlabeled_cell must be > 0, got {unlabeled_cell}")
    group_N = np.empty(len(label_N), dtype=np.int64)
    labeled = label_N != NO_LABEL
    labels, inverse = np.unique(label_N[labeled], return_inverse=True)
    group_N[labeled] = inverse
    label_sizes: list[dict[int, int]] = [
        {int(lab): int(n)} for lab, n in zip(labels, np.bincount(inverse, minlength=len(labels)))
    ]
    unlabeled = ~labeled
    if unlabeled.any():
        cell_M3 = np.floor(xyz_N3[unlabeled] / unlabeled_cell).astype(np.int64)
        _, cell_inverse, cell_counts = np.unique(cell_M3, axis=0, return_inverse=True,
                                                 return_counts=True)
        group_N[unlabeled] = len(labels) + cell_inverse.reshape(-1)
        label_sizes += [{NO_LABEL: int(n)} for n in cell_counts]
    groups = Groups(group_N=group_N, label_sizes=label_sizes, num_initial=len(label_sizes))
    if unlabeled_min_size > 1:
        _merge(groups, xyz_N3, max_groups=None, min_size=unlabeled_min_size)
        groups.merges.clear()  # fragment cleanup is part of grouping, not a budget merge
        groups.num_initial = groups.num_groups
    return groups


def merge_to_fit(groups: Groups, xyz_N3: np.ndarray, max_groups: int) -> Groups:
    """Merge the smallest groups into their nearest neighbours until at most `max_groups` remain."""
    if max_groups < 1:
        raise ValueError(f"max_groups must be >= 1, got {max_groups}")
    if groups.num_groups > max_groups:
        _merge(groups, xyz_N3, max_groups=max_groups, min_size=0)
    return groups


def _merge(groups: Groups, xyz_N3: np.ndarray, max_groups: int | None, min_size: int) -> None:
    """Greedy spatial merging, in place.

    With `max_groups`: the smallest live group joins the group whose center is nearest, until the
    count fits. With `min_size`: unlabeled groups below it join the nearest unlabeled group.
    Centers are size-weighted means, updated after each merge.
    """
    num = groups.num_groups
    sizes = np.bincount(groups.group_N, minlength=num).astype(np.float64)
    sums = np.stack([np.bincount(groups.group_N, weights=xyz_N3[:, c], minlength=num)
                     for c in range(3)], axis=1)
    alive = np.ones(num, dtype=bool)
    unlabeled = np.array([NO_LABEL in ls and len(ls) == 1 for ls in groups.label_sizes])
    parent = np.arange(num)
    while True:
        if max_groups is not None:
            if alive.sum() <= max_groups:
                break
            candidates = alive
            targets = alive
        else:
            candidates = alive & unlabeled & (sizes < min_size)
            targets = alive & unlabeled
            if not candidates.any() or targets.sum() < 2:
                break
        victim = int(np.flatnonzero(candidates)[np.argmin(sizes[candidates])])
        others = targets.copy()
        others[victim] = False
        if not others.any():
            break
        centers = sums / np.maximum(sizes, 1)[:, None]
        dist = ((centers - centers[victim]) ** 2).sum(1)
        dist[~others] = np.inf
        target = int(np.argmin(dist))
        if max_groups is not None:
            groups.merges.append({"labels": sorted(groups.label_sizes[victim]),
                                  "into": sorted(groups.label_sizes[target])})
        for lab, n in groups.label_sizes[victim].items():
            groups.label_sizes[target][lab] = groups.label_sizes[target].get(lab, 0) + n
        sizes[target] += sizes[victim]
        sums[target] += sums[victim]
        alive[victim] = False
        parent[parent == victim] = target
        unlabeled[target] = unlabeled[target] and unlabeled[victim]
    # Compact the live groups, keeping their relative order.
    keep = np.flatnonzero(alive)
    new_index = np.full(num, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    groups.group_N = new_index[parent[groups.group_N]]
    groups.label_sizes = [groups.label_sizes[g] for g in keep]
