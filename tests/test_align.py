"""World alignment core (pipeline/features/align.py), no Ray and no models: the similarity fit to sensor
cameras, its refusals, gravity frames and metres from depth. Expected values come from formulas
written here (random similarities built by QR, cameras by `look_pose`), never from the code under test.

Legend: F frames, H x W pixels, N points.
"""

import numpy as np
import pytest

from pipeline.features.align import (
    align_by_gravity,
    align_to_world,
    apply_to_points,
    apply_to_poses,
    fit_to_sensor_poses,
    gravity_frame,
)
from pipeline.toy.layout import look_pose


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform over SO(3): QR of a Gaussian matrix, signs fixed (any axis, any angle)."""
    q_33, r_33 = np.linalg.qr(rng.normal(size=(3, 3)))
    q_33 = q_33 * np.sign(np.diag(r_33))
    return q_33 if np.linalg.det(q_33) > 0 else -q_33


def random_similarity(rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """(G 4x4, s, R, t) with s in [0.3, 3] and t up to 5 units."""
    rot_33, scale, shift_3 = random_rotation(rng), float(rng.uniform(0.3, 3.0)), rng.uniform(-5, 5, 3)
    g_44 = np.eye(4)
    g_44[:3, :3], g_44[:3, 3] = scale * rot_33, shift_3
    return g_44, scale, rot_33, shift_3


def transform_poses(g_44: np.ndarray, scale: float, pose_F44: np.ndarray) -> np.ndarray:
    """Camera-to-frame poses seen from G's frame: rotation R_G R_i, centre G(c_i)."""
    out_F44 = pose_F44.copy()
    out_F44[:, :3, :3] = g_44[:3, :3] / scale @ pose_F44[:, :3, :3]
    out_F44[:, :3, 3] = pose_F44[:, :3, 3] @ g_44[:3, :3].T + g_44[:3, 3]
    return out_F44


def room_cameras(rng: np.random.Generator, num: int = 8, pitch: float = -0.3) -> np.ndarray:
    """Cameras in a z-up room (metres): positions spread in x, y and a little in z."""
    return np.stack([look_pose(np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(1.2, 1.6)]),
                               rng.uniform(0, 2 * np.pi), pitch) for _ in range(num)])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("orientation_weight", [0.0, 1.0])
def test_fit_recovers_a_random_similarity_exactly(seed, orientation_weight):
    rng = np.random.default_rng(seed)
    world_F44 = room_cameras(rng)
    g_44, scale, _, _ = random_similarity(rng)  # geometry-from-world
    backend_F44 = transform_poses(g_44, scale, world_F44)
    how = fit_to_sensor_poses(backend_F44, world_F44, orientation_weight)
    expected_44 = np.linalg.inv(g_44)  # world-from-geometry
    np.testing.assert_allclose(np.asarray(how.similarity), expected_44, atol=1e-9)
    assert how.scale == pytest.approx(1 / scale, rel=1e-9)
    assert how.residual_m < 1e-9 and how.rotation_residual_deg < 1e-5
    assert how.method == "sensor_poses" and how.scale_method == "camera_centres" and how.num_frames == 8
    # Applied to the backend's cameras, the fit gives back the sensor's.
    np.testing.assert_allclose(apply_to_poses(backend_F44, expected_44), world_F44, atol=1e-5)


def test_noisy_centres_give_the_least_squares_similarity():
    """Centres-only (w = 0) is Umeyama: under noise its residual is no larger than the true similarity's."""
    rng = np.random.default_rng(7)
    world_F44 = room_cameras(rng, num=20)
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)
    backend_F44[:, :3, 3] += rng.normal(0, 0.02 * scale, (20, 3))
    how = fit_to_sensor_poses(backend_F44, world_F44, orientation_weight=0.0)
    true_centres = apply_to_points(backend_F44[:, :3, 3], np.linalg.inv(g_44))
    true_rms = float(np.sqrt(((true_centres - world_F44[:, :3, 3]) ** 2).sum(1).mean()))
    assert how.residual_m <= true_rms + 1e-6
    assert how.scale == pytest.approx(1 / scale, rel=0.03)


def test_lost_tracking_frames_are_left_out():
    rng = np.random.default_rng(11)
    world_F44 = room_cameras(rng, num=7)
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)
    world_F44[[1, 4]] = -np.inf  # ScanNet's marker
    backend_F44[[1, 4], :3, 3] = 1e6  # whatever the backend said there must not matter
    backend_F44[5] = np.nan  # and a backend frame without a prediction
    how = fit_to_sensor_poses(backend_F44, world_F44)
    assert how.num_frames == 4
    np.testing.assert_allclose(np.asarray(how.similarity), np.linalg.inv(g_44), atol=1e-9)


def test_degenerate_fits_raise_with_their_reason():
    rng = np.random.default_rng(5)
    world_F44 = room_cameras(rng, num=6)
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)

    too_few = world_F44.copy()
    too_few[2:] = -np.inf
    with pytest.raises(ValueError, match="only 2 of 6 frames .* at least 3"):
        fit_to_sensor_poses(backend_F44, too_few)

    tripod = world_F44.copy()
    tripod[:, :3, 3] = [1.0, 2.0, 1.5]  # a pan on a tripod: no baseline, no scale
    with pytest.raises(ValueError, match="nearly coincide.*scale is undetermined"):
        fit_to_sensor_poses(transform_poses(g_44, scale, tripod), tripod)

    # A walk down a corridor: centres on one line. Centres alone leave the roll about it free...
    corridor = world_F44.copy()
    corridor[:, :3, 3] = np.outer(np.linspace(0, 4, 6), [0.6, 0.8, 0.0]) + [0, 0, 1.4]
    corridor_backend = transform_poses(g_44, scale, corridor)
    with pytest.raises(ValueError, match="collinear.*undetermined"):
        fit_to_sensor_poses(corridor_backend, corridor, orientation_weight=0.0)
    # ...which the camera orientations pin down (the documented choice: w > 0 accepts such a walk).
    how = fit_to_sensor_poses(corridor_backend, corridor, orientation_weight=1.0)
    np.testing.assert_allclose(np.asarray(how.similarity), np.linalg.inv(g_44), atol=1e-9)

    with pytest.raises(ValueError, match="F x 4 x 4"):
        fit_to_sensor_poses(backend_F44[:, :3], world_F44[:, :3])
    with pytest.raises(ValueError, match="only 0 of 6"):
        fit_to_sensor_poses(np.full_like(backend_F44, np.nan), world_F44)
    mirrored = backend_F44.copy()
    mirrored[:, :3, 3] *= -1  # centres that run against the orientations: the fitted scale is negative
    with pytest.raises(ValueError, match="not positive"):
        fit_to_sensor_poses(mirrored, world_F44, orientation_weight=100.0)


def test_points_and_poses_move_together_and_nan_stays_nan():
    rng = np.random.default_rng(2)
    g_44, scale, rot_33, shift_3 = random_similarity(rng)
    pose_F44 = room_cameras(rng, num=3)
    cam_N3 = rng.uniform(-1, 1, (5, 3)) + [0, 0, 3]
    world_FN3 = cam_N3 @ pose_F44[:, :3, :3].transpose(0, 2, 1) + pose_F44[:, None, :3, 3]
    world_FN3[0, 2] = np.nan
    moved_FN3 = apply_to_points(world_FN3, g_44)
    expected_FN3 = scale * world_FN3 @ rot_33.T + shift_3
    np.testing.assert_allclose(moved_FN3, expected_FN3, atol=1e-5)
    assert np.isnan(moved_FN3[0, 2]).all() and np.isfinite(np.delete(moved_FN3[0], 2, 0)).all()
    # A camera point through the moved pose lands where the moved world point is, scaled by s.
    moved_F44 = apply_to_poses(pose_F44, g_44)
    via_pose_FN3 = scale * cam_N3 @ moved_F44[:, :3, :3].transpose(0, 2, 1) + moved_F44[:, None, :3, 3]
    np.testing.assert_allclose(via_pose_FN3[1:], expected_FN3[1:], atol=1e-4)
    with pytest.raises(ValueError, match="scaled rotation"):
        apply_to_poses(pose_F44, np.diag([1.0, 2.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="end in 3"):
        apply_to_points(np.zeros((4, 2)), g_44)


# ---- gravity ----------------------------------------------------------------------------------

def render_depth(pose_F44: np.ndarray, k_33: np.ndarray, hw: tuple[int, int], floor_z: float = 0.0,
                 wall: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(z-depth F x H x W, world points F x H x W x 3) of a floor at `floor_z` inside a box room."""
    height, width = hw
    v_HW, u_HW = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rays_HW3 = np.stack([u_HW, v_HW, np.ones_like(u_HW)], -1) @ np.linalg.inv(k_33).T  # camera z = 1
    depth_FHW = np.empty((len(pose_F44), height, width))
    for f, pose in enumerate(pose_F44):
        dirs_HW3 = rays_HW3 @ pose[:3, :3].T
        hits = []
        for axis, plane in ((2, floor_z), (2, floor_z + 2.6), (0, -wall), (0, wall), (1, -wall), (1, wall)):
            with np.errstate(divide="ignore", invalid="ignore"):
                t_HW = (plane - pose[axis, 3]) / dirs_HW3[..., axis]
            hits.append(np.where(t_HW > 0, t_HW, np.inf))
        depth_FHW[f] = np.min(hits, axis=0)
    xyz_FHW3 = depth_FHW[..., None] * (rays_HW3 @ pose_F44[:, None, :3, :3].transpose(0, 1, 3, 2)) \
        + pose_F44[:, None, None, :3, 3]
    return depth_FHW, xyz_FHW3


K_33 = np.array([[40.0, 0, 23.5], [0, 40.0, 17.5], [0, 0, 1]])


@pytest.mark.parametrize("seed", range(3))
def test_gravity_frame_makes_z_up_for_level_cameras(seed):
    rng = np.random.default_rng(seed)
    world_F44 = room_cameras(rng, num=5, pitch=0.0)  # cameras held level
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)
    rigid_44, up_method = gravity_frame(backend_F44)
    assert up_method == "cameras"
    aligned_F44 = apply_to_poses(backend_F44, rigid_44)
    np.testing.assert_allclose(-aligned_F44[:, :3, 1], np.tile([0, 0, 1.0], (5, 1)), atol=1e-5)
    # x is camera 0's forward, made horizontal; the origin lies under camera 0.
    np.testing.assert_allclose(aligned_F44[0, :3, 2], [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(aligned_F44[0, :2, 3], [0, 0], atol=1e-5)


def test_the_floor_corrects_cameras_that_all_look_down():
    rng = np.random.default_rng(4)
    yaw = 0.7
    # A walk forward, every camera pitched 30 degrees down: the mean camera up is tilted by 30.
    world_F44 = np.stack([look_pose(np.array([x, 0.5 * x - 1, 1.5]), yaw, -np.radians(30))
                          for x in np.linspace(-1.5, 1.5, 6)])
    _, xyz_FHW3 = render_depth(world_F44, K_33, (36, 48))
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)
    backend_xyz = apply_to_points(xyz_FHW3, g_44)
    cameras_only, method = gravity_frame(backend_F44)
    assert method == "cameras"
    up_cameras_3 = cameras_only[2, :3]  # the frame's z axis in backend coordinates
    true_up_3 = g_44[:3, :3] @ [0, 0, 1.0] / scale
    assert np.degrees(np.arccos(up_cameras_3 @ true_up_3)) > 20
    rigid_44, method = gravity_frame(backend_F44, backend_xyz)
    assert method == "floor"
    aligned_xyz = apply_to_points(backend_xyz, rigid_44)
    floor_N = (xyz_FHW3[..., 2] < 1e-9)  # pixels that see the floor
    assert floor_N.mean() > 0.2
    # z is the true up to within 0.2 degrees, and the floor is flat at z = 0 to within 5 mm.
    assert np.degrees(np.arccos(np.clip(rigid_44[2, :3] @ true_up_3, -1, 1))) < 0.2
    assert np.abs(aligned_xyz[floor_N][:, 2]).max() / scale < 0.005


def test_gravity_scale_from_sensor_depth_else_the_prior():
    rng = np.random.default_rng(9)
    world_F44 = room_cameras(rng, num=4, pitch=-0.2)
    depth_FHW, xyz_FHW3 = render_depth(world_F44, K_33, (36, 48))
    g_44, scale, _, _ = random_similarity(rng)
    backend_F44 = transform_poses(g_44, scale, world_F44)
    backend_xyz = apply_to_points(xyz_FHW3, g_44)
    how = align_by_gravity(backend_xyz, backend_F44, depth_FHW.astype(np.float32), scale_prior=0.7)
    assert how.method == "gravity" and how.scale_method == "median_depth_ratio"
    assert how.scale == pytest.approx(1 / scale, rel=1e-4)
    # Metric: the room's walls 6 m apart come back 6 m apart; the floor at z = 0, the ceiling at 2.6.
    world_xyz = apply_to_points(backend_xyz, np.asarray(how.similarity))
    assert np.nanmax(world_xyz[..., 2]) == pytest.approx(2.6, abs=1e-3)
    assert np.nanmin(world_xyz[..., 2]) == pytest.approx(0.0, abs=1e-3)
    prior = align_by_gravity(backend_xyz, backend_F44, None, scale_prior=0.7)
    assert prior.scale_method == "prior" and prior.scale == 0.7


def test_align_to_world_dispatches_on_the_frame():
    rng = np.random.default_rng(3)
    world_F44 = room_cameras(rng, num=4).astype(np.float32)
    xyz = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    same_xyz, same_pose, how = align_to_world(xyz, world_F44, "world", world_F44, None)
    assert how.method == "identity" and how.scale == 1.0 and same_xyz is xyz and same_pose is world_F44
    with pytest.raises(ValueError, match="unknown geometry frame"):
        align_to_world(xyz, world_F44, "camera7", world_F44, None)
    g_44, scale, _, _ = random_similarity(rng)
    out_xyz, out_pose, how = align_to_world(apply_to_points(xyz, g_44), transform_poses(g_44, scale, world_F44),
                                            "camera0", world_F44, None)
    assert how.method == "sensor_poses"
    np.testing.assert_allclose(out_xyz, xyz, atol=1e-4)
    np.testing.assert_allclose(out_pose, world_F44, atol=1e-4)
    _, _, how = align_to_world(xyz, world_F44, "camera0", None, None, scale_prior=2.0)
    assert how.method == "gravity" and how.scale_method == "prior" and how.scale == 2.0
