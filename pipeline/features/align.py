"""World alignment: a geometry backend's camera-0 output -> the scene's world frame (pure numpy).

VGGT predicts points and cameras in the first camera's frame at an unknown scale; the triplet store
holds the scene's world frame in metres (DESIGN.md, "One world frame"). Two ways there:

sensor poses (ScanNet, the toy world)
    A similarity x_world = s R x + t fitted to the sensor cameras. The rotation maximises
    trace(R^T M) with M = M_centres + w M_orient, where
      M_centres = cov(dst centres, src centres) / (rms spread dst * rms spread src)  (Umeyama [1]),
      M_orient  = mean_i(S_i R_i^T) / 3   (S, R: sensor and backend camera-to-world rotations).
    Both terms are dimensionless and reach 1 at a perfect fit, so `orientation_weight` w = 1 weighs
    them equally; w = 0 is Umeyama on the centres alone. Camera orientations pin the rotation even
    when the centres are (nearly) collinear, as on a walk down a corridor: with w > 0 collinear
    centres are a valid input, and only w = 0 rejects them (the rotation about the line is free).
    Given R, scale and translation are the least-squares ones of the centres. Coincident centres
    (a tripod pan) leave the scale undetermined and are rejected. ScanNet's sources already apply
    `axisAlignment` to the sensor poses, so the fitted frame is ScanRefer's axis-aligned frame.
gravity (a video: no poses)
    z up is the mean camera "up" (-y of OpenCV cameras), replaced by the floor's normal when a
    dense plane within 40 degrees of it is found among the lower half of the points (a seeded
    RANSAC): cameras pitched down bias the camera estimate; the floor does not. x is camera 0's
    forward direction made horizontal, the origin is below camera 0 on the floor (z = 0 at the floor, or at the 2nd percentile of point heights).
    Metres from sensor depth (median depth ratio, `estimate_scale`) when present, else from a metric
    depth model (`metric_depth_scale`: Depth Anything V2 metric indoor), else the configured prior
    (the last resort, warned about in the run report); `scale_method` records which, and
    `scale_error` the depth model's error against sensor depth the scale was not allowed to use.

[1] S. Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    TPAMI 1991.

Legend: F frames, H x W pixels, N points. Poses are camera-to-frame 4x4 with OpenCV camera axes.
"""

from __future__ import annotations

import numpy as np

from schemas.store import WorldAlignment

MIN_FRAMES = 3
MIN_SPREAD_M = 0.05  # RMS spread of the sensor camera centres below which scale is undetermined
COLLINEAR_RATIO = 1e-3  # second / first singular value of M below which the rotation is free
FLOOR_MAX_TILT_DEG = 40.0  # cameras scanning a room often look 30 degrees down; walls stay >= 50 away
FLOOR_MIN_FRACTION = 0.05  # of the valid points, for the lowest slab to count as a floor


# ---- similarity maths ---------------------------------------------------------------------------

def similarity_matrix(rotation_33: np.ndarray, translation_3: np.ndarray, scale: float) -> np.ndarray:
    """[[s R, t], [0, 1]] as float64."""
    m_44 = np.eye(4)
    m_44[:3, :3] = scale * np.asarray(rotation_33, dtype=np.float64)
    m_44[:3, 3] = translation_3
    return m_44


def split_similarity(m_44: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, s) of a similarity matrix; ValueError when its 3x3 block is not s times a rotation."""
    m_44 = np.asarray(m_44, dtype=np.float64)
    if m_44.shape != (4, 4) or not np.isfinite(m_44).all():
        raise ValueError(f"a similarity must be a finite 4x4 matrix, got shape {m_44.shape}")
    scale = float(np.cbrt(np.linalg.det(m_44[:3, :3])))
    if scale <= 0:
        raise ValueError("similarity has a non-positive determinant (a reflection or a collapse)")
    rotation_33 = m_44[:3, :3] / scale
    if not np.allclose(rotation_33 @ rotation_33.T, np.eye(3), atol=1e-5):
        raise ValueError("similarity's 3x3 block is not a scaled rotation")
    return rotation_33, m_44[:3, 3].copy(), scale


def apply_to_points(xyz_N3: np.ndarray, m_44: np.ndarray) -> np.ndarray:
    """Points (any leading shape, last axis 3) through the similarity; invalid (NaN) points stay NaN."""
    xyz = np.asarray(xyz_N3)
    if xyz.shape[-1] != 3:
        raise ValueError(f"points must end in 3 coordinates, got shape {xyz.shape}")
    m_44 = np.asarray(m_44, dtype=np.float64)
    out = xyz.astype(np.float64) @ m_44[:3, :3].T + m_44[:3, 3]
    out[~np.isfinite(xyz).all(axis=-1)] = np.nan
    return out.astype(np.float32)


def apply_to_poses(pose_F44: np.ndarray, m_44: np.ndarray) -> np.ndarray:
    """Camera-to-frame poses through the similarity: rotation R R_i, centre s R c_i + t (so they stay
    rigid poses in metres). Non-finite poses stay non-finite."""
    rotation_33, translation_3, scale = split_similarity(m_44)
    pose = np.asarray(pose_F44, dtype=np.float64)
    out_F44 = np.zeros_like(pose)
    out_F44[:, :3, :3] = rotation_33 @ pose[:, :3, :3]
    out_F44[:, :3, 3] = scale * pose[:, :3, 3] @ rotation_33.T + translation_3
    out_F44[:, 3, 3] = 1.0
    bad_F = ~np.isfinite(pose).all(axis=(1, 2))
    out_F44[bad_F] = np.nan
    return out_F44.astype(np.float32)


def valid_poses(pose_F44: np.ndarray) -> np.ndarray:
    """bool F: finite poses (ScanNet marks lost tracking with -inf)."""
    return np.isfinite(np.asarray(pose_F44, dtype=np.float64)).all(axis=(1, 2))


def _rotation_angles_deg(a_F33: np.ndarray, b_F33: np.ndarray) -> np.ndarray:
    """Angle (degrees) of a_i^T b_i for each i, from |a - b|_F = 2 sqrt(2) sin(angle / 2) (arccos of the
    trace loses small angles to rounding)."""
    chord_F = np.linalg.norm(a_F33 - b_F33, axis=(1, 2)) / (2.0 * np.sqrt(2.0))
    return np.degrees(2.0 * np.arcsin(np.clip(chord_F, 0.0, 1.0)))


def _nearest_rotation(m_33: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation maximising trace(R^T M) and M's singular values (largest first)."""
    u_33, sv_3, vt_33 = np.linalg.svd(m_33)
    fix_33 = np.diag([1.0, 1.0, np.sign(np.linalg.det(u_33 @ vt_33)) or 1.0])
    return u_33 @ fix_33 @ vt_33, sv_3


# ---- sensor poses -------------------------------------------------------------------------------

def fit_to_sensor_poses(src_pose_F44: np.ndarray, dst_pose_F44: np.ndarray,
                        orientation_weight: float = 1.0) -> WorldAlignment:
    """The similarity taking the backend's cameras (`src`) onto the sensor's (`dst`, metres).

    Frames where either pose is not finite are left out. ValueError with the reason when fewer than
    3 frames remain, the centres coincide, the rotation is undetermined, or the fit is not finite.
    """
    src = np.asarray(src_pose_F44, dtype=np.float64)
    dst = np.asarray(dst_pose_F44, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 3 or src.shape[1:] != (4, 4):
        raise ValueError(f"poses must both be F x 4 x 4, got {src.shape} and {dst.shape}")
    if not orientation_weight >= 0:
        raise ValueError(f"orientation_weight must be >= 0, got {orientation_weight}")
    usable_F = valid_poses(src) & valid_poses(dst)
    num = int(usable_F.sum())
    if num < MIN_FRAMES:
        raise ValueError(f"only {num} of {len(src)} frames have a finite pose from both the sensor and the "
                         f"geometry backend; the alignment needs at least {MIN_FRAMES}")
    src, dst = src[usable_F], dst[usable_F]
    src_c_N3, dst_c_N3 = src[:, :3, 3], dst[:, :3, 3]
    src_mean_3, dst_mean_3 = src_c_N3.mean(0), dst_c_N3.mean(0)
    src_d_N3, dst_d_N3 = src_c_N3 - src_mean_3, dst_c_N3 - dst_mean_3
    src_spread = float(np.sqrt((src_d_N3 ** 2).sum(1).mean()))
    dst_spread = float(np.sqrt((dst_d_N3 ** 2).sum(1).mean()))
    if dst_spread < MIN_SPREAD_M or not src_spread > 1e-9 * (1.0 + np.abs(src_c_N3).max()):
        raise ValueError(f"camera centres nearly coincide (RMS spread {dst_spread:.3f} m by the sensor, "
                         f"{src_spread:.3g} units by the backend): scale is undetermined")

    m_centres_33 = dst_d_N3.T @ src_d_N3 / num / (src_spread * dst_spread)
    m_orient_33 = np.einsum("fij,fkj->ik", dst[:, :3, :3], src[:, :3, :3]) / num / 3.0
    rotation_33, sv_3 = _nearest_rotation(m_centres_33 + orientation_weight * m_orient_33)
    if not np.isfinite(sv_3).all() or sv_3[1] < COLLINEAR_RATIO * sv_3[0]:
        raise ValueError("camera centres are nearly collinear and orientations were not used "
                         f"(orientation_weight={orientation_weight}): the rotation about their line "
                         "is undetermined")
    scale = float((dst_d_N3 * (src_d_N3 @ rotation_33.T)).sum() / (src_d_N3 ** 2).sum())
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"fitted scale {scale:.3g} is not positive: the backend's cameras do not match "
                         "the sensor's")
    translation_3 = dst_mean_3 - scale * rotation_33 @ src_mean_3
    fitted_N3 = scale * src_c_N3 @ rotation_33.T + translation_3
    residual_m = float(np.sqrt(((fitted_N3 - dst_c_N3) ** 2).sum(1).mean()))
    angles_F = _rotation_angles_deg(dst[:, :3, :3], rotation_33 @ src[:, :3, :3])
    m_44 = similarity_matrix(rotation_33, translation_3, scale)
    if not (np.isfinite(m_44).all() and np.isfinite(residual_m)):
        raise ValueError("the alignment fit is not finite")
    return WorldAlignment(method="sensor_poses", similarity=m_44.tolist(), scale=scale,
                          scale_method="camera_centres", residual_m=residual_m,
                          rotation_residual_deg=float(np.sqrt((angles_F ** 2).mean())), num_frames=num)


# ---- gravity ------------------------------------------------------------------------------------

def _unit(v_3: np.ndarray) -> np.ndarray:
    return v_3 / np.linalg.norm(v_3)


def _floor_plane(points_N3: np.ndarray, up_3: np.ndarray, num_tries: int = 300
                 ) -> tuple[np.ndarray, float] | None:
    """(normal, height) of the lowest dense plane of points, or None when there is none near `up`.

    A seeded RANSAC over planes through three points of the lower half (along `up`) whose normal is
    within FLOOR_MAX_TILT_DEG of `up`; the plane with most points within 1 % of the scene's extent
    wins if it holds FLOOR_MIN_FRACTION of them, and is refined by least-squares fits on a band that
    shrinks to three times the median distance of its points.
    """
    rng = np.random.default_rng(0)
    if len(points_N3) > 20_000:
        points_N3 = points_N3[rng.choice(len(points_N3), 20_000, replace=False)]
    heights_N = points_N3 @ up_3
    low_N3 = points_N3[heights_N <= np.median(heights_N)]
    extent = float(np.linalg.norm(np.percentile(points_N3, 99, axis=0) - np.percentile(points_N3, 1, axis=0)))
    if len(low_N3) < 3 or not extent > 0:
        return None
    tol, cos_max = 0.01 * extent, np.cos(np.radians(FLOOR_MAX_TILT_DEG))
    best_N, best_count = None, 0
    for _ in range(num_tries):
        a_3, b_3, c_3 = low_N3[rng.choice(len(low_N3), 3, replace=False)]
        normal_3 = np.cross(b_3 - a_3, c_3 - a_3)
        norm = np.linalg.norm(normal_3)
        if norm < 1e-12 or abs(normal_3 @ up_3) < cos_max * norm:
            continue
        inliers_N = np.abs((points_N3 - a_3) @ (normal_3 / norm)) < tol
        if inliers_N.sum() > best_count:
            best_N, best_count = inliers_N, int(inliers_N.sum())
    if best_N is None or best_count < FLOOR_MIN_FRACTION * len(points_N3):
        return None
    inliers_N = best_N
    for _ in range(5):  # the band shrinks to the floor's own spread, dropping the walls' bottom strips
        plane_N3 = points_N3[inliers_N]
        centre_3 = plane_N3.mean(0)
        normal_3 = np.linalg.svd(plane_N3 - centre_3, full_matrices=False)[2][2]
        normal_3 = normal_3 if normal_3 @ up_3 > 0 else -normal_3
        dist_N = np.abs((points_N3 - centre_3) @ normal_3)
        band = max(3.0 * float(np.median(dist_N[inliers_N])), 1e-6 * extent)
        if (dist_N < band).sum() < 3:
            break
        inliers_N = dist_N < band
    return normal_3, float(centre_3 @ normal_3)


def gravity_frame(pose_F44: np.ndarray, xyz_N3: np.ndarray | None = None
                  ) -> tuple[np.ndarray, str]:
    """A rigid 4x4 (unit scale) taking the backend's frame to a z-up one, and "floor" or "cameras"."""
    pose = np.asarray(pose_F44, dtype=np.float64)
    usable_F = valid_poses(pose)
    if not usable_F.any():
        raise ValueError("no frame has a finite camera pose: cannot estimate up")
    pose = pose[usable_F]
    mean_up_3 = (-pose[:, :3, 1]).mean(0)
    if np.linalg.norm(mean_up_3) < 0.5:
        raise ValueError("the cameras' up directions disagree (mean length "
                         f"{np.linalg.norm(mean_up_3):.2f}): cannot estimate gravity")
    up_3, up_method, floor_height = _unit(mean_up_3), "cameras", None
    points_N3 = None
    if xyz_N3 is not None:
        points_N3 = np.asarray(xyz_N3, dtype=np.float64).reshape(-1, 3)
        points_N3 = points_N3[np.isfinite(points_N3).all(1)]
        if len(points_N3) > 200_000:  # a deterministic thinning; the floor is large
            points_N3 = points_N3[:: len(points_N3) // 200_000 + 1]
        floor = _floor_plane(points_N3, up_3) if len(points_N3) >= 10 else None
        if floor is not None:
            (up_3, floor_height), up_method = floor, "floor"
    forward_3 = pose[0, :3, 2] - (pose[0, :3, 2] @ up_3) * up_3
    if np.linalg.norm(forward_3) < 1e-3:  # camera 0 looks straight up or down
        forward_3 = pose[0, :3, 0] - (pose[0, :3, 0] @ up_3) * up_3
    x_3 = _unit(forward_3)
    rotation_33 = np.stack([x_3, np.cross(up_3, x_3), up_3])  # rows: world axes in backend coordinates
    if floor_height is None:
        floor_height = (float(np.percentile(points_N3 @ up_3, 2)) if points_N3 is not None and len(points_N3)
                        else float(pose[0, :3, 3] @ up_3))
    origin_3 = pose[0, :3, 3] + (floor_height - pose[0, :3, 3] @ up_3) * up_3
    return similarity_matrix(rotation_33, -rotation_33 @ origin_3, 1.0), up_method


def depth_in_cameras(xyz_FHW3: np.ndarray, pose_F44: np.ndarray) -> np.ndarray:
    """Each point's z in its own camera (float64 F x H x W; NaN where the point or pose is invalid)."""
    pose = np.asarray(pose_F44, dtype=np.float64)
    rel_FHW3 = np.asarray(xyz_FHW3, dtype=np.float64) - pose[:, None, None, :3, 3]
    return np.einsum("fhwi,fi->fhw", rel_FHW3, pose[:, :3, 2])


def metric_depth_scale(model_depth_FHW: np.ndarray, geometry_depth_FHW: np.ndarray) -> float:
    """Metres per geometry unit from a metric depth model: the median over frames of each frame's
    median ratio model depth / geometry depth, over pixels where both are finite and > 0.

    Two medians because a monocular model's errors come per frame as much as per pixel: a close-up
    of a blank wall or a window can be off as a whole, so a frame's pixels are not independent
    votes. Each frame casts one vote (its median tolerates up to half its pixels wrong: reflections,
    blurred depth edges), and up to half the frames may be wrong as a whole; a pooled median would
    let the frames with most valid pixels decide. Frames without a usable pixel cast no vote.
    """
    model = np.asarray(model_depth_FHW, dtype=np.float64)
    geometry = np.asarray(geometry_depth_FHW, dtype=np.float64)
    if model.shape != geometry.shape or model.ndim != 3:
        raise ValueError(f"model depth {model.shape} and geometry depth {geometry.shape} must both be "
                         "F x H x W of the same size")
    usable = np.isfinite(model) & np.isfinite(geometry) & (model > 0) & (geometry > 0)
    votes = [float(np.median(model[f][usable[f]] / geometry[f][usable[f]]))
             for f in range(len(model)) if usable[f].any()]
    if not votes:
        raise ValueError("no pixel has both a valid metric-model depth and a valid geometry depth")
    return float(np.median(votes))


def align_by_gravity(xyz_FHW3: np.ndarray, pose_F44: np.ndarray, sensor_depth_FHW: np.ndarray | None,
                     scale_prior: float, model_depth_FHW: np.ndarray | None = None,
                     reference_depth_FHW: np.ndarray | None = None) -> WorldAlignment:
    """Gravity frame plus metres: from sensor depth (median ratio) when given, else from a metric
    depth model's depth, else `scale_prior`. `reference_depth_FHW` (sensor depth withheld from the
    scale) measures the depth model's scale error."""
    from pipeline.models.vggt.geometry import estimate_scale

    rigid_44, up_method = gravity_frame(pose_F44, xyz_FHW3)
    pred_FHW = depth_in_cameras(xyz_FHW3, pose_F44)
    scale_error = None
    if sensor_depth_FHW is not None:
        scale, scale_method = estimate_scale(pred_FHW, sensor_depth_FHW), "median_depth_ratio"
    elif model_depth_FHW is not None:
        scale, scale_method = metric_depth_scale(model_depth_FHW, pred_FHW), "depth_model"
        if reference_depth_FHW is not None:
            scale_error = scale / estimate_scale(pred_FHW, reference_depth_FHW) - 1.0
    else:
        scale, scale_method = float(scale_prior), "prior"
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"metric scale {scale!r} ({scale_method}) is not positive")
    m_44 = np.diag([scale, scale, scale, 1.0]) @ rigid_44
    return WorldAlignment(method="gravity", similarity=m_44.tolist(), scale=scale, scale_method=scale_method,
                          num_frames=int(valid_poses(pose_F44).sum()), up_method=up_method,
                          scale_error=scale_error)


# ---- the stage's entry point --------------------------------------------------------------------

def align_to_world(xyz_FHW3: np.ndarray, pose_F44: np.ndarray, frame: str,
                   sensor_poses_F44: np.ndarray | None, sensor_depth_FHW: np.ndarray | None,
                   orientation_weight: float = 1.0, scale_prior: float = 1.0,
                   model_depth_FHW: np.ndarray | None = None, reference_depth_FHW: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, WorldAlignment]:
    """(world xyz, world poses, how) for a geometry output in `frame` ("world" or "camera0").
    `model_depth_FHW` and `reference_depth_FHW` matter only without sensor poses (align_by_gravity)."""
    if frame == "world":
        how = WorldAlignment(method="identity", similarity=np.eye(4).tolist(), scale=1.0,
                             scale_method="metric", num_frames=int(valid_poses(pose_F44).sum()))
        return xyz_FHW3, pose_F44, how
    if frame != "camera0":
        raise ValueError(f"unknown geometry frame {frame!r}; expected 'world' or 'camera0'")
    if sensor_poses_F44 is not None:
        how = fit_to_sensor_poses(pose_F44, sensor_poses_F44, orientation_weight)
    else:
        how = align_by_gravity(xyz_FHW3, pose_F44, sensor_depth_FHW, scale_prior, model_depth_FHW,
                               reference_depth_FHW)
    m_44 = np.asarray(how.similarity)
    return apply_to_points(xyz_FHW3, m_44), apply_to_poses(pose_F44, m_44), how
