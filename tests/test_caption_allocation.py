"""Scan2Cap allocation (paper Table 5): the captioned object gets exactly N proxies, every other
proxy is the same in every variant, and the cluster stage reads each scene's store once."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cluster.caption import caption_variant, focus_proxies
from pipeline.cluster.core import cluster_scene
from schemas.config_cluster import ClusterConfig
from tests.synthetic_triplets import store_arrays, synthetic_scene


@pytest.fixture(scope="module", params=["xyz", "xyz+feat"])
def clustered(request):
    scene = synthetic_scene(num_frames=4, h=8, w=10, dim=16, num_objects=10, seed=1)
    params = ClusterConfig(proxies=60, space=request.param)
    return scene, params, cluster_scene(scene.feat_FhwD, scene.xyz_Fhw3, scene.label_Fhw, config=params)


def _variant(base, focus, s):
    return caption_variant(base.feat_KD, base.xyz_K3, base.segment_K, focus.feat_MD, focus.xyz_M3,
                           focus.segment_M, s)


def test_captioned_object_gets_n_proxies_and_the_rest_is_unchanged(clustered):
    scene, params, base = clustered
    n = 5
    focus = focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, base, n, params)
    instances = [s for s, seg in enumerate(base.segments) if seg.label >= 0]
    assert instances and sorted(set(focus.segment_M.tolist())) == instances
    for s in instances:
        feat, xyz, segment = _variant(base, focus, s)
        expected_n = min(n, base.segments[s].size)
        assert (segment == s).sum() == expected_n
        assert len(segment) == base.num_proxies - base.segments[s].proxies + expected_n
        assert (np.diff(segment) >= 0).all()  # still contiguous, still in BFS order
        others, base_others = segment != s, base.segment_K != s
        np.testing.assert_array_equal(feat[others], base.feat_KD[base_others])
        np.testing.assert_array_equal(xyz[others], base.xyz_K3[base_others])
        np.testing.assert_array_equal(segment[others], base.segment_K[base_others])
        box_min, box_max = base.segments[s].box_min, base.segments[s].box_max
        assert ((xyz[~others] >= box_min - 1e-4) & (xyz[~others] <= box_max + 1e-4)).all()
    with pytest.raises(ValueError, match="no focus proxies"):
        unlabeled = [s for s, seg in enumerate(base.segments) if seg.label < 0]
        _variant(base, focus, unlabeled[0] if unlabeled else len(base.segments))


def test_one_focus_proxy_is_the_objects_mean_and_enough_are_its_triplets(clustered):
    scene, params, base = clustered
    xyz_N3 = scene.xyz_Fhw3.reshape(-1, 3)
    one = focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, base, 1, params)
    for s in set(one.segment_M.tolist()):
        members = xyz_N3[base.segment_N == s].astype(np.float64)
        np.testing.assert_allclose(one.xyz_M3[one.segment_M == s][0], members.mean(0), atol=1e-5)
    s = min(set(one.segment_M.tolist()), key=lambda i: base.segments[i].size)
    size = base.segments[s].size
    every = focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, base, size + 3, params)
    got = every.xyz_M3[every.segment_M == s]
    assert len(got) == size  # never more proxies than triplets
    members = xyz_N3[base.segment_N == s]
    np.testing.assert_array_equal(np.unique(got, axis=0), np.unique(members, axis=0))


@pytest.mark.slow
def test_cluster_stage_writes_the_focus_blocks_reading_each_scene_once(tmp_path, monkeypatch):
    import pipeline.features.store as store_module
    from pipeline.cluster.driver import run_cluster
    from pipeline.cluster.shards import load_scene_proxies
    from pipeline.features.store import write_scene
    from schemas.config_cluster import ClusterConfig
    from schemas.store import ModelRef, StoreAttrs

    for i in range(2):
        scene = synthetic_scene(num_frames=4, h=8, w=10, dim=16, num_objects=8, seed=i)
        attrs = StoreAttrs(scene_id=f"s{i}", source={"kind": "synthetic"}, encoder=ModelRef(kind="synthetic"),
                           geometry=ModelRef(kind="synthetic"), segmenter=ModelRef(kind="synthetic"),
                           frame_indices=list(range(4)), image_size=[224, 280], patch_size=28, grid=[8, 10],
                           objects=scene.objects, pipeline_version="test")
        write_scene(tmp_path, attrs, store_arrays(scene))
    reads: list[str] = []
    real_read = store_module.read_scene
    monkeypatch.setattr(store_module, "read_scene", lambda out, scene_id, *a, **k: (
        reads.append(scene_id), real_read(out, scene_id, *a, **k))[1])

    report = run_cluster(tmp_path, ClusterConfig(name="cap", proxies=40, caption_proxies=5, executor="local"))
    assert not report.failed and sorted(reads) == ["s0", "s1"]
    plain = run_cluster(tmp_path, ClusterConfig(name="plain", proxies=40, executor="local"))
    assert not plain.failed
    for scene_id in ("s0", "s1"):
        sample = load_scene_proxies(tmp_path, "cap", scene_id)
        same = load_scene_proxies(tmp_path, "plain", scene_id)
        np.testing.assert_array_equal(sample["feat"], same["feat"])  # the scene's own sequence unchanged
        assert "focus_feat" not in same and "caption_proxies" not in same["meta"].params
        assert sample["meta"].params["caption_proxies"] == 5
        for info in sample["segments"]:
            if info.label < 0:
                continue
            _, _, segment = caption_variant(sample["feat"], sample["xyz"], sample["segment"],
                                            sample["focus_feat"], sample["focus_xyz"],
                                            sample["focus_segment"], info.id)
            assert (segment == info.id).sum() == min(5, info.size)


def test_training_shows_a_caption_its_objects_focus_block_and_other_examples_the_scene(clustered):
    """Through the shard members and the trainer's decoder: a caption example's scene tokens hold N
    tokens of its object's identifier (the rest as the scene's own), any other example the scene's own."""
    from types import SimpleNamespace

    from pipeline.cluster.shards import encode_sample
    from schemas.proxy import ProxyMeta
    from schemas.record import Record
    from trainer.shard_reader import decode_sample
    from trainer.rank_stream import StageStream
    from trainer.objects import segment_identifiers

    scene, params, base = clustered
    n = 5
    focus = focus_proxies(scene.feat_FhwD, scene.xyz_Fhw3, base, n, params)
    labels = [seg.label for seg in base.segments]
    # The segments are their labels' instances (a stand-in for matching.py, not under test here).
    matching = SimpleNamespace(instance_S=[lab if lab >= 0 else None for lab in labels],
                               iou_S=[1.0 if lab >= 0 else None for lab in labels])
    meta = ProxyMeta(scene_id="s0", num_proxies=base.num_proxies, budget=params.proxies, dim=16,
                     num_valid_triplets=base.num_valid, params={}, source={})
    raw = encode_sample("s0", base, meta, matching, {lab: "chair" for lab in labels if lab >= 0}, focus)
    decoded = decode_sample(raw)
    captioned = sorted(set(focus.segment_M.tolist()), key=lambda s: -base.segments[s].proxies)[:2]
    records = [Record(id=f"c{s}", scene_id="s0", task="caption", source="toy", question="Describe <OBJ>.",
                      answers=["a chair"], target_ids=[labels[s]]) for s in captioned]
    records.append(Record(id="q", scene_id="s0", task="qa", source="toy", question="Is it a room?",
                          answers=["yes"]))
    stream = StageStream("unused", 4, {"s0": records}, num_obj_tokens=64, batch_size=1,
                         tasks=["caption", "qa"])
    items = {ex.record_id: inputs for ex, inputs in stream._examples(decoded, epoch=0)}
    assert set(items) == {"c" + str(s) for s in captioned} | {"q"}
    ident_of = segment_identifiers(decoded["segments"], 64)
    base_ident = items["q"]["ident"]
    assert len(base_ident) == base.num_proxies
    for s in captioned:
        assert base.segments[s].proxies != min(n, base.segments[s].size)  # the swap is visible
        ident = items[f"c{s}"]["ident"]
        assert (ident == ident_of[s]).sum() == min(n, base.segments[s].size)
        np.testing.assert_array_equal(ident[ident != ident_of[s]], base_ident[base_ident != ident_of[s]])
        assert len(ident) == base.num_proxies - base.segments[s].proxies + min(n, base.segments[s].size)
