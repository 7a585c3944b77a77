"""Segmenter backend `sim_sam2`: SAM 2's output contract and typical errors, made from ground truth.

No SAM 2 weights can be downloaded for the toy world, and a random-weight SAM 2 gives meaningless
masks. This backend gives what the steps after a real SAM 2 must cope with, from the toy world's
ground-truth instance masks (untrained, simulated: its `ModelRef` says `trained: false`):
  - per-frame masks whose ids mean nothing: a fresh random numbering (permutation plus offset) in
    every frame, so identity across frames must come from the 3D merge;
  - splits: a stable fraction of objects (`split_rate`) comes in two masks in every frame, cut at the
    median of its pixels along an image axis chosen per object (a table top and its legs);
  - merges: a fraction of objects (`merge_rate`) shares one mask with the neighbour it borders most in
    the images (a lamp on its nightstand);
  - misses: in each frame each object is missed with probability `miss_rate`;
  - background: in a fraction of frames (`background_rate`) the room surfaces (ground truth -1) are cut
    into `background_masks` vertical bands at random columns, masks that match no object.
Then the same cross-frame merge as the `sam2` backend (mask_merge.merge_frames_3d with the config's
`merge_voxel` and `merge_min_overlap`), so the stored labels are merge indices, as SAM 2's are. All
choices are seeded by (`sim_seed`, scene id): a scene always gets the same masks.

Legend: F frames, H x W pixels, O ground-truth objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.models.mask_merge import merge_frames_3d
from pipeline.models.protocols import SensorFrames
from schemas.config_features import SegmenterConfig
from schemas.store import ModelRef

SIM_SAM2 = "sim:sam2"
ID_OFFSET_MAX = 10_000  # per-frame ids are a permutation shifted by up to this much


@dataclass
class SimLog:
    """What the simulation did, for tests and the benchmark."""

    split: list[int] = field(default_factory=list)  # objects cut in two in every frame
    merged: list[tuple[int, int]] = field(default_factory=list)  # (object, the neighbour it joins)
    missed: list[tuple[int, int]] = field(default_factory=list)  # (frame, object) left without a mask
    visible: int = 0  # (frame, mask unit) pairs where the unit had pixels
    background_frames: list[int] = field(default_factory=list)


def scene_rng(seed: int, scene_id: str) -> np.random.Generator:
    """Stable across processes (Python's hash() is salted): from a digest of the scene id."""
    digest = int.from_bytes(hashlib.sha256(scene_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def _adjacency(instances_FHW: np.ndarray, objects_O: np.ndarray) -> np.ndarray:
    """O x O counts of 4-neighbour pixel pairs where two objects touch, over all frames."""
    index = {int(o): i for i, o in enumerate(objects_O)}
    lut = np.full(int(instances_FHW.max(initial=-1)) + 2, -1, np.int64)
    for o, i in index.items():
        lut[o + 1] = i
    idx_FHW = lut[instances_FHW.astype(np.int64) + 1]
    num = len(objects_O)
    adj_OO = np.zeros((num, num), np.int64)
    for a, b in ((idx_FHW[:, 1:, :], idx_FHW[:, :-1, :]), (idx_FHW[:, :, 1:], idx_FHW[:, :, :-1])):
        touch = (a >= 0) & (b >= 0) & (a != b)
        np.add.at(adj_OO, (a[touch], b[touch]), 1)
    return adj_OO + adj_OO.T


def _plan(instances_FHW: np.ndarray, rates: SegmenterConfig, rng: np.random.Generator):
    """Scene-level choices (stable across frames): split objects with their axis, merge pairs."""
    objects_O = np.unique(instances_FHW[instances_FHW >= 0])
    num = len(objects_O)
    order = rng.permutation(num)
    num_split = int(round(rates.split_rate * num))
    split = {int(objects_O[i]): int(rng.integers(2)) for i in order[:num_split]}
    adj_OO = _adjacency(instances_FHW, objects_O)
    merged: list[tuple[int, int]] = []
    involved = set(split)
    for i in order[num_split:]:
        if len(merged) >= int(round(rates.merge_rate * num)):
            break
        if int(objects_O[i]) in involved:
            continue
        free = [j for j in np.argsort(-adj_OO[i], kind="stable")
                if adj_OO[i, j] > 0 and int(objects_O[j]) not in involved]
        if free:
            a, b = int(objects_O[i]), int(objects_O[free[0]])
            merged.append((a, b))
            involved |= {a, b}
    return objects_O, split, merged


def simulate_frame_masks(instances_FHW: np.ndarray, rates: SegmenterConfig,
                         rng: np.random.Generator) -> tuple[np.ndarray, SimLog]:
    """Per-frame label maps (int32 F x H x W, -1 = none, ids unrelated across frames) and the log."""
    if instances_FHW.ndim != 3:
        raise ValueError(f"sim_sam2: instance masks must be F x H x W, got shape {instances_FHW.shape}")
    num_frames, height, width = instances_FHW.shape
    objects_O, split, merged = _plan(instances_FHW, rates, rng)
    log = SimLog(split=sorted(split), merged=merged)
    joins = dict(merged)  # object -> the neighbour whose mask it shares
    units = [int(o) for o in objects_O if int(o) not in joins]  # one mask (or two, if split) each
    members = {u: [u] + [a for a, b in merged if b == u] for u in units}
    out_FHW = np.full(instances_FHW.shape, -1, np.int32)
    for f in range(num_frames):
        inst_HW = instances_FHW[f]
        masks: list[np.ndarray] = []
        for u in units:
            pixels_HW = np.isin(inst_HW, members[u])
            if not pixels_HW.any():
                continue
            log.visible += 1
            if rng.random() < rates.miss_rate:
                log.missed.append((f, u))
                continue
            if u in split and pixels_HW.sum() >= 2:
                coord_HW = np.indices((height, width))[split[u]]
                cut = np.median(coord_HW[pixels_HW])
                low_HW = pixels_HW & (coord_HW < cut)
                if not low_HW.any():  # all pixels on the median line: cut at it instead
                    low_HW = pixels_HW & (coord_HW <= cut)
                high_HW = pixels_HW & ~low_HW
                masks += [m for m in (low_HW, high_HW) if m.any()]
            else:
                masks.append(pixels_HW)
        if rng.random() < rates.background_rate:
            log.background_frames.append(f)
            cuts = np.sort(rng.choice(np.arange(1, width), size=min(rates.background_masks - 1, width - 1),
                                      replace=False)) if width > 1 else np.zeros(0, np.int64)
            bounds = np.r_[0, cuts, width]
            surface_HW = inst_HW < 0
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                band_HW = np.zeros_like(surface_HW)
                band_HW[:, lo:hi] = surface_HW[:, lo:hi]
                if band_HW.any():
                    masks.append(band_HW)
        ids = int(rng.integers(ID_OFFSET_MAX)) + rng.permutation(len(masks))
        for mask_HW, local_id in zip(masks, ids):
            out_FHW[f][mask_HW] = local_id
    return out_FHW, log


class SimSAM2:
    """`config` is the workflow's `segmenter` section: its rates, merge settings and seed."""

    def __init__(self, config: SegmenterConfig):
        self.rates, self.seed = config, config.sim_seed
        self.merge_voxel, self.merge_min_overlap = config.merge_voxel, config.merge_min_overlap
        self.ref = ModelRef(kind="sim_sam2", model=SIM_SAM2, revision=None, trained=False)

    def frame_labels(self, sensor: SensorFrames) -> tuple[np.ndarray, SimLog]:
        if sensor.instances_FHW is None:
            raise ValueError(f"scene {sensor.scene_id}: segmenter 'sim_sam2' simulates SAM 2 from ground-truth "
                             "instance masks, which this source lacks; use 'sam2'")
        return simulate_frame_masks(np.asarray(sensor.instances_FHW), self.rates,
                                    scene_rng(self.seed, sensor.scene_id))

    def segment(self, images_FHW3: np.ndarray, sensor: SensorFrames,
                xyz_FHW3: np.ndarray | None = None) -> np.ndarray:
        if xyz_FHW3 is None:
            raise ValueError(f"scene {sensor.scene_id}: segmenter 'sim_sam2' merges masks across frames by "
                             "their 3D points and needs the geometry's point maps")
        if sensor.instances_FHW is not None and np.shape(sensor.instances_FHW) != images_FHW3.shape[:3]:
            raise ValueError(f"scene {sensor.scene_id}: instance masks {np.shape(sensor.instances_FHW)} do not "
                             f"match images {images_FHW3.shape[:3]}")
        frame_labels_FHW, _ = self.frame_labels(sensor)
        return merge_frames_3d(frame_labels_FHW, xyz_FHW3, self.merge_voxel, self.merge_min_overlap)


def load_segmenter(config: SegmenterConfig, data_root, device: str = "cpu") -> SimSAM2:
    """Factory for the registry."""
    return SimSAM2(config)
