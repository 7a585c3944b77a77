"""Synthetic triplets with realistic group statistics, for the cluster tests and benchmarks (a test
fixture: the real path never imports it).

A room of axis-aligned boxes: a few large instances (floor, walls) and many small objects whose
patch counts fall off like a power law, as in real indoor scans; some patches unlabeled, some with
invalid geometry (NaN). Each object has its own feature direction plus noise, so feature-space
clustering has structure to find. Not a renderer: patches sample box surfaces directly.

Legend: F frames, h x w patch grid, D feature dims, O objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticScene:
    feat_FhwD: np.ndarray  # float16
    xyz_Fhw3: np.ndarray  # float32, NaN = invalid
    label_Fhw: np.ndarray  # int32, -1 = unlabeled
    objects: list[dict]  # schemas.ObjectInfo dicts


CATEGORIES = ("chair", "table", "sofa", "bed", "lamp", "shelf", "cabinet", "plant", "monitor", "box")


def synthetic_scene(num_frames: int = 32, h: int = 16, w: int = 21, dim: int = 1280,
                    num_objects: int = 40, unlabeled_fraction: float = 0.1,
                    nan_fraction: float = 0.03, seed: int = 0) -> SyntheticScene:
    rng = np.random.default_rng(seed)
    room = np.array([6.0, 5.0, 3.0])
    lo_O3 = np.zeros((num_objects, 3))
    size_O3 = np.zeros((num_objects, 3))
    categories = []
    # Structure first: floor and two walls, then furniture on the floor.
    lo_O3[0], size_O3[0] = [0, 0, 0], [room[0], room[1], 0.02]
    lo_O3[1], size_O3[1] = [0, 0, 0], [room[0], 0.02, room[2]]
    lo_O3[2], size_O3[2] = [0, 0, 0], [0.02, room[1], room[2]]
    categories += ["floor", "wall", "wall"]
    for o in range(3, num_objects):
        size_O3[o] = rng.uniform([0.2, 0.2, 0.2], [1.6, 1.2, 1.4])
        lo_O3[o] = rng.uniform([0, 0, 0], np.maximum(room - size_O3[o], 0.01)) * [1, 1, 0]
        categories.append(CATEGORIES[o % len(CATEGORIES)])
    # Power-law visibility: structure dominates, small objects get few patches.
    weight_O = 1.0 / np.arange(1, num_objects + 1) ** 1.1
    weight_O /= weight_O.sum()
    num = num_frames * h * w
    obj_N = rng.choice(num_objects, size=num, p=weight_O)
    # A point on a random face of its object's box.
    unit_N3 = rng.uniform(0, 1, (num, 3))
    face_N = rng.integers(0, 3, num)
    unit_N3[np.arange(num), face_N] = rng.integers(0, 2, num)
    xyz_N3 = lo_O3[obj_N] + unit_N3 * size_O3[obj_N]
    label_N = obj_N.astype(np.int32)
    unlabeled = rng.uniform(size=num) < unlabeled_fraction
    label_N[unlabeled] = -1
    xyz_N3[unlabeled] = rng.uniform(0, 1, (int(unlabeled.sum()), 3)) * room
    direction_OD = rng.standard_normal((num_objects + 1, dim)).astype(np.float32)
    feat_ND = direction_OD[np.where(unlabeled, num_objects, obj_N)]
    feat_ND += 0.5 * rng.standard_normal((num, dim), dtype=np.float32)
    xyz_N3[rng.uniform(size=num) < nan_fraction] = np.nan
    objects = [
        {"id": o, "category": categories[o],
         "box": {"center": (lo_O3[o] + size_O3[o] / 2).tolist(), "size": size_O3[o].tolist()}}
        for o in range(num_objects)
    ]
    return SyntheticScene(
        feat_FhwD=feat_ND.astype(np.float16).reshape(num_frames, h, w, dim),
        xyz_Fhw3=xyz_N3.astype(np.float32).reshape(num_frames, h, w, 3),
        label_Fhw=label_N.reshape(num_frames, h, w),
        objects=objects,
    )


def store_arrays(scene: SyntheticScene) -> dict[str, np.ndarray]:
    """The arrays `pipeline.features.store.write_scene` takes (conf, pose, intrinsics made up). The
    labels are the ground truth here (an oracle segmenter), so `gt_label` equals `label`."""
    num_frames, h, w = scene.label_Fhw.shape
    return {
        "feat": scene.feat_FhwD, "xyz": scene.xyz_Fhw3, "label": scene.label_Fhw,
        "gt_label": scene.label_Fhw.copy(),
        "conf": np.ones((num_frames, h, w), np.float16),
        "pose": np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1)),
        "intrinsics": np.tile(np.eye(3, dtype=np.float32), (num_frames, 1, 1)),
    }
