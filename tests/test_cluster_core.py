"""Property tests of the cluster stage's pure core: allocation, grouping, FPS + FAISS, BFS and
`cluster_scene` end to end on synthetic arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cluster.allocation import allocate_proxies
from pipeline.cluster.core import cluster_scene
from schemas.config_cluster import ClusterConfig
from pipeline.cluster.grouping import group_by_label, merge_to_fit
from pipeline.cluster.sampling import (
    assign_nearest, assign_nearest_numpy, cluster_group, farthest_point_sampling, segment_mean,
)
from pipeline.cluster.serialize import bfs_order
from tests.synthetic_triplets import synthetic_scene


# ---------------------------------------------------------------- allocation

@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 500), min_size=1, max_size=40),
       budget=st.integers(1, 800), minimum=st.integers(0, 3))
def test_allocation_invariants(sizes, budget, minimum):
    sizes = np.array(sizes)
    nonempty = sizes > 0
    if np.minimum(sizes, minimum).sum() > budget:
        with pytest.raises(ValueError):
            allocate_proxies(sizes, budget, minimum)
        return
    alloc = allocate_proxies(sizes, budget, minimum)
    assert (alloc <= sizes).all()
    assert (alloc[nonempty] >= np.minimum(sizes[nonempty], minimum)).all()
    assert alloc.sum() == min(budget, sizes.sum())
    # Proportionality: above the minimum, no uncapped group is more than one proxy off its quota,
    # and no uncapped larger group gets fewer proxies than a smaller one.
    if sizes.sum() > budget:
        base = np.minimum(sizes, minimum)
        uncapped = alloc < sizes
        capped_total = alloc[~uncapped].sum() - base[~uncapped].sum()
        pool = sizes[uncapped].sum()
        if pool:
            quota = (budget - base.sum() - capped_total) * sizes[uncapped] / pool
            assert (np.abs(alloc[uncapped] - base[uncapped] - quota) < 1 + 1e-9).all()
        s_u, e_u = sizes[uncapped], (alloc - base)[uncapped]
        larger = s_u[:, None] > s_u[None, :]
        assert (e_u[:, None] >= e_u[None, :])[larger].all()


def test_allocation_largest_remainder_by_hand():
    # 10 proxies, min 1: 3 base, 7 shared by size 50:30:20 -> 3.5, 2.1, 1.4 -> floors 3,2,1 and
    # the one left goes to the largest remainder (0.5, group 0).
    assert allocate_proxies(np.array([50, 30, 20]), 10, 1).tolist() == [5, 3, 2]
    # A group capped by its size gives its share back to the others.
    assert allocate_proxies(np.array([2, 100, 100]), 50, 1).tolist() == [2, 24, 24]
    # Fewer triplets than the budget: every triplet is a proxy.
    assert allocate_proxies(np.array([3, 4]), 100, 1).tolist() == [3, 4]


# ---------------------------------------------------------------- grouping

def test_unlabeled_patches_do_not_form_one_group():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 6, (5000, 3)).astype(np.float32)
    label = np.full(5000, -1, np.int32)
    label[:1000] = 7
    groups = group_by_label(xyz, label, unlabeled_cell=1.0, unlabeled_min_size=8)
    sizes = groups.sizes()
    unlabeled = [g for g in range(groups.num_groups) if groups.primary_label(g) == -1]
    assert len(unlabeled) > 50
    assert sizes[unlabeled].max() < 4000 / 10
    # Members of an unlabeled group stay spatially compact (within a few cells).
    for g in unlabeled[:10]:
        pts = xyz[groups.group_N == g]
        assert (pts.max(0) - pts.min(0)).max() <= 3.0


def test_merge_joins_smallest_into_nearest_and_reports():
    # Labels 0, 1 big, far apart; labels 2 (near 0) and 3 (near 1) tiny.
    xyz = np.concatenate([np.zeros((50, 3)), np.full((50, 3), 10.0),
                          np.full((2, 3), 0.5), np.full((3, 3), 9.5)]).astype(np.float32)
    label = np.array([0] * 50 + [1] * 50 + [2] * 2 + [3] * 3, np.int32)
    groups = group_by_label(xyz, label, 1.0)
    merge_to_fit(groups, xyz, max_groups=2)
    assert groups.num_groups == 2
    assert [groups.primary_label(g) for g in range(2)] == [0, 1]
    assert groups.merged_labels(0) == [2] and groups.merged_labels(1) == [3]
    assert groups.merges == [{"labels": [2], "into": [0]}, {"labels": [3], "into": [1]}]


def test_more_groups_than_budget_merge_and_say_so():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(0, 10, (400, 3)).astype(np.float32)
    label = np.arange(400, dtype=np.int32) // 4  # 100 labels of 4 triplets
    feat = rng.standard_normal((400, 8)).astype(np.float16)
    result = cluster_scene(feat, xyz, label, 30)
    assert result.num_proxies == 30
    assert len(result.segments) == 30
    assert result.num_groups_initial == 100
    assert len(result.merges) == 70 and any("merged 70" in n for n in result.notes)
    labels_seen = {s.label for s in result.segments} | {m for s in result.segments for m in s.merged_labels}
    assert labels_seen == set(range(100))


# ---------------------------------------------------------------- FPS, FAISS, means

def test_fps_seeded_deterministic_and_farthest():
    rng = np.random.default_rng(2)
    pts = rng.standard_normal((300, 3)).astype(np.float32)
    a = farthest_point_sampling(pts, 20, seed=5)
    assert np.array_equal(a, farthest_point_sampling(pts, 20, seed=5))
    assert len(set(a.tolist())) == 20
    assert not np.array_equal(a, farthest_point_sampling(pts, 20, seed=6))
    # Each new center is the point farthest from the centers chosen before it.
    for i in range(1, 20):
        d = ((pts[:, None] - pts[a[:i]][None]) ** 2).sum(-1).min(1)
        assert d[a[i]] == pytest.approx(d.max(), rel=1e-5)


def test_fps_high_dim_path_matches_low_dim_definition():
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((200, 40)).astype(np.float32)
    chosen = farthest_point_sampling(pts, 15, seed=0)
    for i in range(1, 15):
        d = ((pts[:, None].astype(np.float64) - pts[chosen[:i]][None]) ** 2).sum(-1).min(1)
        assert d[chosen[i]] >= d.max() * (1 - 1e-4)


@pytest.mark.parametrize("dim", [3, 67])
def test_faiss_assignment_matches_brute_force(dim):
    rng = np.random.default_rng(dim)
    pts = rng.standard_normal((2000, dim)).astype(np.float32)
    centers = pts[rng.choice(2000, 50, replace=False)]
    assert np.array_equal(assign_nearest(pts, centers), assign_nearest_numpy(pts, centers))


def test_cluster_group_no_empty_proxy_with_duplicate_points():
    pts = np.zeros((10, 3), np.float32)
    pts[5:] = 1.0
    _, proxy = cluster_group(pts, 4, seed=0)
    assert sorted(set(proxy.tolist())) == [0, 1, 2, 3]


def test_segment_mean_is_the_mean_of_members():
    rng = np.random.default_rng(4)
    values = rng.standard_normal((500, 300)).astype(np.float16)
    index = rng.integers(0, 40, 500)
    index[:40] = np.arange(40)
    expected = np.stack([values[index == k].astype(np.float64).mean(0) for k in range(40)])
    assert np.allclose(segment_mean(values, index, 40), expected, atol=1e-5)


def test_segment_mean_fast_half_path_equals_float32_path():
    rng = np.random.default_rng(6)
    values = rng.standard_normal((700, 1000)).astype(np.float16)
    index = np.arange(700) % 97
    rows = rng.permutation(700)
    fast = segment_mean(values, index, 97, rows_N=rows)
    plain = segment_mean(values.astype(np.float32), index, 97, rows_N=rows)
    assert np.array_equal(fast, plain)


# ---------------------------------------------------------------- BFS

def test_bfs_line_in_order_from_nearest_origin():
    xs = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    centers = np.stack([xs, np.zeros(5), np.zeros(5)], 1)
    assert xs[bfs_order(centers, 2)].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_bfs_visits_neighbours_nearest_first_then_next_component():
    # Hub at the origin with spokes at distance 3, 1, 2; a far cluster reached last.
    centers = np.array([[3, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 2], [50, 0, 0], [51, 0, 0]], float)
    order = bfs_order(centers, 3)
    assert order.tolist() == [1, 2, 3, 0, 4, 5]


# ---------------------------------------------------------------- cluster_scene

@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(num_frames=8, h=16, w=21, dim=64, num_objects=25, seed=0)


def test_budget_exact_minimums_and_contiguous_segments(scene):
    result = cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw, 300)
    assert result.num_proxies == 300 and result.feat_KD.shape == (300, 64)
    seg = result.segment_K
    # Segment ids are BFS positions: non-decreasing along the sequence, each contiguous.
    assert (np.diff(seg) >= 0).all() and seg[0] == 0 and seg[-1] == len(result.segments) - 1
    counts = np.bincount(seg)
    assert counts.tolist() == [s.proxies for s in result.segments]
    assert all(1 <= s.proxies <= s.size for s in result.segments)
    valid = np.isfinite(scene.xyz_Fhw3).all(-1)
    assert sum(s.size for s in result.segments) == result.num_valid == valid.sum()
    # Every object label is a segment's label or merged into one.
    labels = set(np.unique(scene.label_Fhw[valid]).tolist()) - {-1}
    assert labels <= {s.label for s in result.segments} | {m for s in result.segments for m in s.merged_labels}
    # The first segment is the one whose center is nearest the origin.
    centers = np.stack([s.center for s in result.segments])
    assert np.argmin(np.linalg.norm(centers, axis=1)) == 0


def test_proxies_are_means_of_members_and_nan_never_enters():
    # One labeled object: points on a line, features equal to x; NaN points carry huge features.
    x = np.linspace(0, 1, 40)
    xyz = np.stack([x, np.zeros(40), np.zeros(40)], 1).astype(np.float32)
    feat = np.repeat(x[:, None], 4, 1).astype(np.float32)
    xyz[::5] = np.nan
    feat[::5] = 1e4
    label = np.zeros(40, np.int32)
    result = cluster_scene(feat, xyz, label, 8, ClusterConfig(proxies=8, unlabeled_min_size=1))
    assert result.num_valid == 32
    assert np.nanmax(result.feat_KD) <= 1.0 + 1e-6
    # Features equal x, so each proxy's feature is the mean of its members' x = its position.
    assert np.allclose(result.feat_KD[:, 0], result.xyz_K3[:, 0], atol=1e-6)
    assert np.isfinite(result.xyz_K3).all()


def test_non_finite_features_are_dropped_not_averaged(scene):
    feat = scene.feat_FhwD.copy()
    feat[0, 0, 0, 3] = np.inf
    feat[1, 2, 3, 0] = np.nan
    result = cluster_scene(feat, scene.xyz_Fhw3, scene.label_Fhw, 200)
    assert np.isfinite(result.feat_KD).all() and result.num_proxies == 200
    assert any("non-finite" in n for n in result.notes)


def test_fewer_valid_triplets_than_budget_emits_what_there_is():
    rng = np.random.default_rng(5)
    xyz = rng.uniform(0, 3, (50, 3)).astype(np.float32)
    xyz[:20] = np.nan
    result = cluster_scene(rng.standard_normal((50, 8)), xyz, np.arange(50) % 3, 700)
    assert result.num_proxies == 30 and result.num_valid == 30
    assert any("< budget" in n for n in result.notes)


def test_all_nan_scene_is_a_value_error_naming_the_scene():
    xyz = np.full((10, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="scene s1"):
        cluster_scene(np.zeros((10, 4)), xyz, np.zeros(10, np.int32), 5, scene_id="s1")


def test_deterministic_and_seeded(scene):
    args = (scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw)
    a = cluster_scene(*args, 250)
    b = cluster_scene(*args, 250)
    c = cluster_scene(*args, config=ClusterConfig(proxies=250, seed=1))
    assert np.array_equal(a.feat_KD, b.feat_KD) and np.array_equal(a.xyz_K3, b.xyz_K3)
    assert not np.array_equal(a.xyz_K3, c.xyz_K3)


def _blobs(rng, sizes, spacing=10.0, extent=1.0):
    """Well-separated labelled cubes of points (object o at x = o * spacing), features = [xyz, label]."""
    xyz = np.concatenate([rng.uniform(0, extent, (n, 3)) + [o * spacing, 0, 0] for o, n in enumerate(sizes)])
    label = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    feat = np.concatenate([xyz, label[:, None]], axis=1).astype(np.float32)
    return feat, xyz.astype(np.float32), label


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(30, 300), min_size=1, max_size=8),
       spare=st.integers(0, 10))
def test_no_grouping_every_separated_object_gets_its_segment(seed, sizes, spare):
    rng = np.random.default_rng(seed)
    feat, xyz, label = _blobs(rng, sizes)
    budget = 2 * len(sizes) + spare
    result = cluster_scene(feat, xyz, label, config=ClusterConfig(proxies=budget, grouping=False, seed=seed))
    assert result.num_proxies == budget
    # Contiguous segments in BFS order, as in grouping mode.
    assert (np.diff(result.segment_K) >= 0).all()
    assert np.bincount(result.segment_K).tolist() == [s.proxies for s in result.segments]
    assert sum(s.size for s in result.segments) == len(xyz)
    for o in range(len(sizes)):
        (seg,) = [s for s in result.segments if s.label == o]
        centroid = xyz[label == o].mean(0)
        assert (seg.box_min <= centroid).all() and (centroid <= seg.box_max).all()
        assert seg.size == sizes[o] and seg.merged_labels == []
    # Features are still the means of each proxy's members: here [xyz, label] of pure proxies.
    assert np.allclose(result.feat_KD[:, :3], result.xyz_K3, atol=1e-5)
    labels_K = [result.segments[s].label for s in result.segment_K]
    assert np.allclose(result.feat_KD[:, 3], labels_K, atol=1e-5)
    assert any(f"0 of {len(sizes)} labelled instances got no segment" in n for n in result.notes)


def test_no_grouping_can_absorb_a_small_object_and_says_so():
    rng = np.random.default_rng(0)
    big = rng.uniform(0, 2, (2000, 3))
    tiny = rng.uniform(0, 0.1, (6, 3)) + [2.0, 0.95, 0.95]  # on the big cube's face, away from its corners
    xyz = np.concatenate([big, tiny]).astype(np.float32)
    label = np.r_[np.zeros(2000), np.ones(6)].astype(np.int32)
    feat = np.concatenate([xyz, label[:, None]], axis=1)
    result = cluster_scene(feat, xyz, label, config=ClusterConfig(proxies=4, grouping=False))
    assert result.num_proxies == 4 and [s.label for s in result.segments] == [0]
    assert result.segments[0].merged_labels == [1]  # still referenced, through the big object
    assert result.merges == [{"labels": [1], "into": [0]}]
    assert any("1 of 2 labelled instances got no segment of their own" in n for n in result.notes)
    # With grouping, the same budget gives the tiny object a segment of its own.
    grouped = cluster_scene(feat, xyz, label, config=ClusterConfig(proxies=4))
    assert sorted(s.label for s in grouped.segments) == [0, 1]


def test_no_grouping_on_a_room_keeps_the_invariants(scene):
    result = cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw,
                           config=ClusterConfig(proxies=120, grouping=False))
    assert result.num_proxies == 120 and len(result.segments) > 1
    assert (np.diff(result.segment_K) >= 0).all()
    assert np.bincount(result.segment_K).tolist() == [s.proxies for s in result.segments]
    assert sum(s.size for s in result.segments) == result.num_valid
    for k, seg_id in enumerate(result.segment_K):
        seg = result.segments[seg_id]
        assert (seg.box_min - 1e-5 <= result.xyz_K3[k]).all()
        assert (result.xyz_K3[k] <= seg.box_max + 1e-5).all()
    # Each labelled instance is a segment's label or merged into one, and one segment per label.
    valid = np.isfinite(scene.xyz_Fhw3).all(-1)
    labels = set(np.unique(scene.label_Fhw[valid]).tolist()) - {-1}
    own = [s.label for s in result.segments if s.label >= 0]
    assert len(own) == len(set(own))
    assert labels == set(own) | {m for s in result.segments for m in s.merged_labels}


def test_feature_space_changes_assignment_and_keeps_invariants(scene):
    args = (scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw)
    xyz_only = cluster_scene(*args, config=ClusterConfig(proxies=200, grouping=False))
    with_feat = cluster_scene(*args, config=ClusterConfig(proxies=200, grouping=False, space="xyz+feat",
                                                          feat_weight=3.0))
    assert with_feat.num_proxies == 200
    assert not np.allclose(xyz_only.xyz_K3, with_feat.xyz_K3)
    # With features in the metric, proxies mix fewer objects: members share features more.
    def spread(res):
        return float(np.linalg.norm(res.feat_KD.astype(np.float64), axis=1).mean())
    assert spread(with_feat) > spread(xyz_only)


def test_per_object_gives_each_object_n_proxies(scene):
    result = cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw,
                           config=ClusterConfig(proxies=400, per_object=3))
    labeled = [s for s in result.segments if s.label >= 0]
    assert labeled and all(s.proxies == min(3, s.size) for s in labeled)
    # Unlabeled cells share the rest of the budget, as far as they have triplets.
    unlabeled = sum(s.size for s in result.segments if s.label < 0)
    assert result.num_proxies == min(400, sum(s.proxies for s in labeled) + unlabeled)
    assert any(s.label < 0 and s.proxies > 0 for s in result.segments)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="leading shape"):
        cluster_scene(np.zeros((10, 4)), np.zeros((9, 3)), np.zeros(10, np.int32), 5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), num=st.integers(5, 400), budget=st.integers(1, 120),
       num_labels=st.integers(0, 30), nan_rate=st.floats(0, 0.5))
def test_cluster_scene_properties_on_random_scenes(seed, num, budget, num_labels, nan_rate):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2, 4, (num, 3)).astype(np.float32)
    xyz[rng.uniform(size=num) < nan_rate] = np.nan
    label = rng.integers(-1, num_labels, num).astype(np.int32) if num_labels else np.full(num, -1, np.int32)
    feat = rng.standard_normal((num, 6)).astype(np.float16)
    valid = np.isfinite(xyz).all(1)
    if not valid.any():
        with pytest.raises(ValueError):
            cluster_scene(feat, xyz, label, budget)
        return
    result = cluster_scene(feat, xyz, label, budget)
    assert result.num_proxies == min(budget, int(valid.sum()))
    assert np.isfinite(result.xyz_K3).all() and np.isfinite(result.feat_KD).all()
    assert (np.diff(result.segment_K) >= 0).all()
    assert np.bincount(result.segment_K).tolist() == [s.proxies for s in result.segments]
    assert all(1 <= s.proxies <= s.size for s in result.segments)
    # Proxy positions lie inside their segment's box (means of member points).
    for k, seg_id in enumerate(result.segment_K):
        seg = result.segments[seg_id]
        assert (result.xyz_K3[k] >= seg.box_min - 1e-5).all() and (result.xyz_K3[k] <= seg.box_max + 1e-5).all()
