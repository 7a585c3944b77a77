"""A numpy z-buffer renderer for rooms of axis-aligned boxes.

Each pixel casts one ray (through the integer pixel centre, the same convention the intrinsics
follow). The room is a box seen from inside: its exit distance is the background depth. Every
object part is then ray-cast with the slab test, but only over the screen rectangle its corners
project to, so the work follows the parts' visible area rather than parts x pixels. The nearest hit
wins (z-buffer), and shading is Lambert with a fixed light plus position-hashed texture noise.
Depth is z-depth (distance along the optical axis), as a depth camera reports it.
Legend: H x W pixels, B boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR = 0.05
LIGHT_3 = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])
CEILING_RGB = (235, 235, 232)


@dataclass
class BoxScene:
    """What the renderer sees: a room box and solid parts with a colour and an instance id."""

    room_size_3: np.ndarray
    floor_rgb: tuple[int, int, int]
    wall_rgb: tuple[int, int, int]
    lo_B3: np.ndarray
    hi_B3: np.ndarray
    rgb_B3: np.ndarray  # float, already shaded per part
    instance_B: np.ndarray  # int32


@dataclass
class Rendered:
    rgb_HW3: np.ndarray  # uint8
    depth_HW: np.ndarray  # float32 metres, z-depth
    instance_HW: np.ndarray  # int32, -1 = room surface


def _hash_noise(points_N3: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Deterministic value noise in [-1, 1] from the 3D cell a point falls in."""
    ijk = np.floor(points_N3 / cell).astype(np.int64)
    h = (ijk[:, 0] * 73856093) ^ (ijk[:, 1] * 19349663) ^ (ijk[:, 2] * 83492791) ^ (salt * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(np.float64) / 32767.5 - 1.0


def render(scene: BoxScene, pose_44: np.ndarray, k_33: np.ndarray, image_hw: tuple[int, int],
           rng: np.random.Generator | None = None, cull: bool = True) -> Rendered:
    """One frame's colour, z-depth and instance ids by ray casting. `cull=False` tests every part
    against every pixel: the slow reference for the culled path. Long on purpose: one vectorised pass
    (rays, per-part slab intersection, nearest hit, shading) whose intermediate arrays each step reuses;
    split into functions it would pass half a dozen H x W arrays around."""
    h, w = image_hw
    rot_33, origin_3 = pose_44[:3, :3], pose_44[:3, 3]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    dir_cam_HW3 = np.stack([(u - k_33[0, 2]) / k_33[0, 0], (v - k_33[1, 2]) / k_33[1, 1], np.ones_like(u)], -1)
    # Unnormalised rays with unit camera-z, so the ray parameter t *is* the z-depth.
    dir_HW3 = dir_cam_HW3 @ rot_33.T
    with np.errstate(divide="ignore"):
        inv_HW3 = 1.0 / dir_HW3
    inv_A_HW = [np.ascontiguousarray(inv_HW3[..., a]) for a in range(3)]

    # Background: where each ray leaves the room (the face it exits through is what it sees).
    room_hi = scene.room_size_3
    exit_HW3 = np.where(dir_HW3 > 0, (room_hi - origin_3) * inv_HW3, -origin_3 * inv_HW3)
    exit_HW3 = np.where(dir_HW3 == 0, np.inf, exit_HW3)
    axis_HW = np.argmin(exit_HW3, axis=-1)
    depth_HW = np.take_along_axis(exit_HW3, axis_HW[..., None], -1)[..., 0]
    box_HW = np.full((h, w), -1, dtype=np.int64)

    # Object parts, each over the screen rectangle of its projected corners.
    world_to_cam_33 = rot_33.T
    for b in range(len(scene.lo_B3)):
        lo, hi = scene.lo_B3[b], scene.hi_B3[b]
        corners_83 = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        cam_83 = (corners_83 - origin_3) @ world_to_cam_33.T
        if cull and np.all(cam_83[:, 2] <= NEAR):
            continue
        if not cull or np.any(cam_83[:, 2] <= NEAR):
            r0, r1, c0, c1 = 0, h, 0, w  # straddling the camera plane, the projection is unbounded
        else:
            uu = cam_83[:, 0] / cam_83[:, 2] * k_33[0, 0] + k_33[0, 2]
            vv = cam_83[:, 1] / cam_83[:, 2] * k_33[1, 1] + k_33[1, 2]
            c0, c1 = max(int(np.floor(uu.min())), 0), min(int(np.ceil(uu.max())) + 1, w)
            r0, r1 = max(int(np.floor(vv.min())), 0), min(int(np.ceil(vv.max())) + 1, h)
            if c0 >= c1 or r0 >= r1:
                continue
        # Per-axis 2D arrays: numpy reduces a trailing axis of length 3 slowly.
        near, far = [], []
        for a in range(3):
            inv = inv_A_HW[a][r0:r1, c0:c1]
            t_lo, t_hi = (lo[a] - origin_3[a]) * inv, (hi[a] - origin_3[a]) * inv
            near.append(np.fmin(t_lo, t_hi))
            far.append(np.fmax(t_lo, t_hi))
        # fmax / fmin skip the NaN (0 * inf) of a ray lying exactly in a slab's boundary plane.
        t_enter = np.fmax(np.fmax(near[0], near[1]), near[2])
        t_exit = np.fmin(np.fmin(far[0], far[1]), far[2])
        sub_depth = depth_HW[r0:r1, c0:c1]
        hit = (t_enter <= t_exit) & (t_enter > NEAR) & (t_enter < sub_depth)
        if not hit.any():
            continue
        sub_depth[hit] = t_enter[hit]
        box_HW[r0:r1, c0:c1][hit] = b
        n0, n1, n2 = near[0][hit], near[1][hit], near[2][hit]
        axis_HW[r0:r1, c0:c1][hit] = np.where((n0 >= n1) & (n0 >= n2), 0, np.where(n1 >= n2, 1, 2))

    # Shading: the visible face's normal points against the ray along the hit axis.
    normal_HW3 = np.zeros((h, w, 3))
    hit_dir = np.take_along_axis(dir_HW3, axis_HW[..., None], -1)[..., 0]
    np.put_along_axis(normal_HW3, axis_HW[..., None], -np.sign(hit_dir)[..., None], -1)
    lambert_HW = 0.5 + 0.5 * np.clip(normal_HW3 @ LIGHT_3, 0, None) + 0.1 * np.abs(normal_HW3[..., 0])

    base_HW3 = np.empty((h, w, 3))
    is_obj = box_HW >= 0
    base_HW3[is_obj] = scene.rgb_B3[box_HW[is_obj]]
    room = ~is_obj
    floor = room & (axis_HW == 2) & (hit_dir < 0)
    ceiling = room & (axis_HW == 2) & (hit_dir > 0)
    walls = room & ~floor & ~ceiling
    base_HW3[floor] = scene.floor_rgb
    base_HW3[ceiling] = CEILING_RGB
    base_HW3[walls] = scene.wall_rgb

    points_N3 = origin_3 + dir_HW3.reshape(-1, 3) * depth_HW.reshape(-1, 1)
    texture = 0.07 * _hash_noise(points_N3, 0.04, 1) + 0.04 * _hash_noise(points_N3, 0.25, 2)
    # Floor planks: a stripe pattern makes the floor's texture unlike the walls'.
    plank = 0.06 * np.cos(points_N3[:, 0] * 2 * np.pi / 0.2)
    texture = texture.reshape(h, w) + np.where(floor, plank.reshape(h, w), 0.0)
    rgb_HW3 = base_HW3 * (lambert_HW * (1 + texture))[..., None]
    if rng is not None:
        rgb_HW3 = rgb_HW3 + rng.normal(0, 2.0, rgb_HW3.shape)
    instance_HW = np.full((h, w), -1, dtype=np.int32)
    instance_HW[is_obj] = scene.instance_B[box_HW[is_obj]]
    return Rendered(np.clip(rgb_HW3, 0, 255).astype(np.uint8), depth_HW.astype(np.float32), instance_HW)
