"""One id per physical object across frames, from per-frame masks and their 3D points (pure numpy).

Per-frame masks (SAM 2's automatic masks) carry no identity across frames. We give them one by 3D
overlap: each mask's valid points are voxelized; frames are visited in order and each mask joins
the existing object whose voxels it overlaps most (overlap = |A & B| / min(|A|, |B|), at least
`min_overlap`), else starts a new object. An object absorbs the voxels of every mask it takes, so
it grows as the camera moves around it. Two masks of one frame never join the same object: the
segmenter already said they differ.

This is the "merge per-frame masks whose 3D points overlap" choice of the design; SAM 2's video
propagation is the alternative (not implemented). `benchmarks/features.py` measures it against
the toy world's ground-truth instances.

Legend: F frames, H x W pixels, M masks in one frame, V voxels.
"""

from __future__ import annotations

import numpy as np

_BITS = 21
_OFFSET = 1 << (_BITS - 1)


def voxel_keys(xyz_N3: np.ndarray, voxel: float) -> np.ndarray:
    """Sorted unique int64 keys of the voxels the finite points fall in."""
    pts = xyz_N3[np.isfinite(xyz_N3).all(axis=1)]
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    ijk = np.floor(pts / voxel).astype(np.int64) + _OFFSET
    ijk = np.clip(ijk, 0, (1 << _BITS) - 1)
    keys = (ijk[:, 0] << (2 * _BITS)) | (ijk[:, 1] << _BITS) | ijk[:, 2]
    return np.unique(keys)


def paint_masks(masks_MHW: np.ndarray) -> np.ndarray:
    """Per-frame label map (int32, -1 = none): larger masks first, so smaller ones stay visible on top."""
    label_HW = np.full(masks_MHW.shape[1:], -1, np.int32)
    order = np.argsort(-masks_MHW.reshape(len(masks_MHW), -1).sum(axis=1), kind="stable")
    for local_id in order:
        label_HW[masks_MHW[local_id]] = local_id
    return label_HW


def merge_frames_3d(frame_labels_FHW: np.ndarray, xyz_FHW3: np.ndarray, voxel: float,
                    min_overlap: float) -> np.ndarray:
    """Map per-frame ids (-1 = none; ids unrelated across frames) to global object ids."""
    if frame_labels_FHW.shape != xyz_FHW3.shape[:3]:
        raise ValueError(f"mask merge: labels {frame_labels_FHW.shape} and points {xyz_FHW3.shape} differ")
    objects: list[np.ndarray] = []  # sorted voxel keys per global object
    out_FHW = np.full(frame_labels_FHW.shape, -1, np.int32)
    for f in range(len(frame_labels_FHW)):
        labels_HW = frame_labels_FHW[f]
        local_ids, areas = np.unique(labels_HW[labels_HW >= 0], return_counts=True)
        taken: set[int] = set()
        for local_id in local_ids[np.argsort(-areas, kind="stable")]:
            pixels = labels_HW == local_id
            keys = voxel_keys(xyz_FHW3[f][pixels], voxel)
            best, best_overlap = -1, min_overlap
            if len(keys):
                for obj_id, obj_keys in enumerate(objects):
                    if obj_id in taken or len(obj_keys) == 0:
                        continue
                    shared = len(np.intersect1d(keys, obj_keys, assume_unique=True))
                    overlap = shared / min(len(keys), len(obj_keys))
                    if overlap >= best_overlap and shared > 0:
                        best, best_overlap = obj_id, overlap
            if best < 0:
                objects.append(keys)
                best = len(objects) - 1
            else:
                objects[best] = np.union1d(objects[best], keys)
            taken.add(best)
            out_FHW[f][pixels] = best
    return out_FHW
