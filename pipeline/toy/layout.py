"""Procedural room layouts and the camera path that looks around them.

World frame: metres, z up, floor at z = 0, the room spans [0, Lx] x [0, Ly] x [0, Lz]. Objects are
axis-aligned (quarter-turn orientations), placed without overlap; a disc around the room centre is
kept free for the camera, which circles it at about 1.5 m looking across the room, so every object
is seen from several directions.
Legend: F frames, B boxes (object parts); `lo_3` / `hi_3` are box corners.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.toy.shapes import CATEGORIES, CATEGORY_BY_NAME, Part, rotate_parts
from schemas.manifest import Box3D

ROOM_SIDE_RANGE = (3.0, 8.0)
ROOM_HEIGHT_RANGE = (2.6, 3.0)
OBJECT_COUNT_RANGE = (4, 12)
CAMERA_HEIGHT = 1.5
WALL_MARGIN = 0.05
OBJECT_GAP = 0.1
FLOOR_COLOURS = ((150, 110, 70), (180, 170, 150), (110, 100, 95), (200, 190, 170))
WALL_COLOURS = ((210, 205, 195), (190, 205, 215), (215, 200, 180), (200, 215, 195))


@dataclass
class ToyObject:
    id: int
    category: str
    colour: str
    rgb: tuple[int, int, int]
    lo_3: np.ndarray
    hi_3: np.ndarray
    parts: list[Part]  # in world coordinates
    support: int | None = None  # id of the object it stands on

    @property
    def center_3(self) -> np.ndarray:
        return (self.lo_3 + self.hi_3) / 2

    @property
    def size_3(self) -> np.ndarray:
        return self.hi_3 - self.lo_3

    def box(self) -> Box3D:
        """The axis-aligned box, rounded to 0.1 mm to keep the JSON short."""
        return Box3D(center=np.round(self.center_3, 4).tolist(), size=np.round(self.size_3, 4).tolist())


@dataclass
class ToyLayout:
    size_3: np.ndarray  # room Lx, Ly, Lz
    floor_rgb: tuple[int, int, int]
    wall_rgb: tuple[int, int, int]
    objects: list[ToyObject] = field(default_factory=list)

    @property
    def center_2(self) -> np.ndarray:
        return self.size_3[:2] / 2

    @property
    def camera_radius(self) -> float:
        return 0.12 * float(self.size_3[:2].min())

    @property
    def free_radius(self) -> float:
        return self.camera_radius + 0.6


def _overlaps(lo_3, hi_3, others: list[ToyObject], gap: float) -> bool:
    for o in others:
        if np.all(lo_3 < o.hi_3 + gap) and np.all(hi_3 > o.lo_3 - gap):
            # Touching vertically (a monitor on its desk) is not an overlap.
            if hi_3[2] <= o.lo_3[2] + 1e-9 or lo_3[2] >= o.hi_3[2] - 1e-9:
                continue
            return True
    return False


def _disc_hits_rect(center_2, radius, lo_2, hi_2) -> bool:
    nearest_2 = np.clip(center_2, lo_2, hi_2)
    return float(np.linalg.norm(nearest_2 - center_2)) < radius


def _try_place(rng, layout: ToyLayout, cat_name: str, next_id: int) -> ToyObject | None:
    cat = CATEGORY_BY_NAME[cat_name]
    size_3 = rng.uniform(cat.size_lo, cat.size_hi)
    if cat.square:
        size_3[1] = size_3[0]
    turns = int(rng.integers(4))
    footprint_2 = size_3[[1, 0]] if turns % 2 else size_3[:2]
    supports = [o for o in layout.objects if o.category in cat.on] if cat.on else [None]
    room_2 = layout.size_3[:2]
    for _ in range(60):
        support = supports[int(rng.integers(len(supports)))] if supports else None
        if support is None:
            lo_2 = rng.uniform(WALL_MARGIN, room_2 - footprint_2 - WALL_MARGIN)
            base_z = 0.0
        else:
            room_left_2 = support.hi_3[:2] - support.lo_3[:2] - footprint_2
            if np.any(room_left_2 < 0):
                continue
            lo_2 = support.lo_3[:2] + rng.uniform(0, 1, 2) * room_left_2
            base_z = float(support.hi_3[2])
        lo_3 = np.array([lo_2[0], lo_2[1], base_z])
        hi_3 = lo_3 + np.array([footprint_2[0], footprint_2[1], size_3[2]])
        if _disc_hits_rect(layout.center_2, layout.free_radius, lo_3[:2], hi_3[:2]):
            continue
        if _overlaps(lo_3, hi_3, layout.objects, OBJECT_GAP if support is None else 0.02):
            continue
        parts = [(lo + lo_3, hi + lo_3, shade)
                 for lo, hi, shade in rotate_parts(cat.build(*size_3), size_3, turns)]
        colour, rgb = cat.palette[int(rng.integers(len(cat.palette)))]
        # The annotated box is the parts' union, which can be tighter than the placement footprint.
        tight_lo_3 = np.min([lo for lo, _, _ in parts], axis=0)
        tight_hi_3 = np.max([hi for _, hi, _ in parts], axis=0)
        return ToyObject(next_id, cat.name, colour, rgb, tight_lo_3, tight_hi_3, parts,
                         None if support is None else support.id)
    return None


def sample_layout(rng: np.random.Generator) -> ToyLayout:
    """One room with 4-12 non-overlapping objects; deterministic given the generator state."""
    while True:
        size_3 = np.array([*rng.uniform(*ROOM_SIDE_RANGE, 2), rng.uniform(*ROOM_HEIGHT_RANGE)])
        layout = ToyLayout(size_3, FLOOR_COLOURS[int(rng.integers(len(FLOOR_COLOURS)))],
                           WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))])
        lo, hi = OBJECT_COUNT_RANGE
        wanted = int(rng.integers(lo, min(hi, lo + int(size_3[0] * size_3[1] / 5)) + 1))
        names = [c.name for c in CATEGORIES]
        picked = [names[int(i)] for i in rng.integers(len(names), size=wanted)]
        # Big furniture first packs better; things that stand on others come last.
        def order(name: str) -> tuple[bool, float]:
            c = CATEGORY_BY_NAME[name]
            return bool(c.on), -c.size_hi[0] * c.size_hi[1]
        for name in sorted(picked, key=order):
            obj = _try_place(rng, layout, name, len(layout.objects))
            if obj is not None:
                layout.objects.append(obj)
        if len(layout.objects) >= lo:
            return layout


def intrinsics_for(image_hw: tuple[int, int]) -> np.ndarray:
    """Pinhole intrinsics (3x3) of the toy camera; pixel (u, v) integer indices are pixel centres."""
    h, w = image_hw
    focal = 0.65 * w
    return np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def look_pose(position_3: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world 4x4 with OpenCV camera axes (x right, y down, z forward) in a z-up world."""
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = position_3
    return pose


def camera_path(layout: ToyLayout, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """F x 4 x 4 camera-to-world poses: one circle around the free centre, looking across it."""
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(num_frames):
        theta = phase + 2 * np.pi * i / num_frames
        position = np.array([
            *(layout.center_2 + layout.camera_radius * np.array([np.cos(theta), np.sin(theta)])),
            CAMERA_HEIGHT + 0.05 * np.sin(2 * theta),
        ])
        pitch = -(0.42 + 0.12 * np.sin(3 * theta))
        poses.append(look_pose(position, theta + np.pi, pitch))
    return np.stack(poses)
