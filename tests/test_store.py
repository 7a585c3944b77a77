import numpy as np
import pytest

from pipeline.features import store
from schemas.store import ModelRef, StoreAttrs


def _attrs(scene_id="s0"):
    ref = ModelRef(kind="toy")
    return StoreAttrs(scene_id=scene_id, source={"kind": "toy"}, encoder=ref, geometry=ref, segmenter=ref,
                      frame_indices=[0, 5], image_size=[56, 84], patch_size=28, grid=[2, 3],
                      pipeline_version="test")


def _arrays(rng, num_frames=2, h=2, w=3, dim=8):
    xyz = rng.normal(size=(num_frames, h, w, 3)).astype(np.float32)
    xyz[0, 0, 0] = np.nan
    return {
        "feat": rng.normal(size=(num_frames, h, w, dim)).astype(np.float16),
        "xyz": xyz,
        "label": rng.integers(-1, 4, size=(num_frames, h, w)).astype(np.int32),
        "conf": np.ones((num_frames, h, w), np.float16),
        "pose": np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1)),
        "intrinsics": np.tile(np.eye(3, dtype=np.float32), (num_frames, 1, 1)),
    }


def test_roundtrip_and_readers(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    store.write_scene(tmp_path, _attrs(), arrays)
    assert store.list_scenes(tmp_path) == ["s0"]
    scene = store.read_scene(tmp_path, "s0")
    np.testing.assert_array_equal(scene.feat_FhwD, arrays["feat"])
    np.testing.assert_array_equal(scene.label_Fhw, arrays["label"])
    assert np.isnan(scene.xyz_Fhw3[0, 0, 0, 0])
    assert scene.attrs.complete and scene.attrs.grid == [2, 3]

    import dask.array as da
    import xarray as xr
    import zarr

    group = zarr.open_group(str(store.scene_path(tmp_path, "s0")), mode="r")
    assert group["feat"].dtype == np.float16
    lazy = da.from_zarr(str(store.scene_path(tmp_path, "s0") / "label"))
    assert int(lazy.sum().compute()) == int(arrays["label"].sum())
    ds = xr.open_zarr(str(store.scene_path(tmp_path, "s0")), consolidated=False, zarr_format=3)
    assert ds["xyz"].shape == arrays["xyz"].shape


def test_incomplete_group_is_not_listed_and_is_cleaned(tmp_path):
    import zarr

    rng = np.random.default_rng(1)
    store.write_scene(tmp_path, _attrs("done"), _arrays(rng))
    # A group interrupted before its marker: present on disk, not complete.
    half = zarr.open_group(str(store.scene_path(tmp_path, "half")), mode="w", zarr_format=3)
    half.create_array("feat", shape=(1,), dtype="float16")
    (store.features_root(tmp_path) / ".tmp-x-1234").mkdir()
    assert store.list_scenes(tmp_path) == ["done"]
    assert set(store.list_scenes(tmp_path, complete_only=False)) == {"done", "half"}
    with pytest.raises(ValueError, match="half"):
        store.read_scene(tmp_path, "half")
    removed = store.clean_partial(tmp_path)
    assert set(removed) == {"half", ".tmp-x-1234"}
    assert store.list_scenes(tmp_path, complete_only=False) == ["done"]


def test_shape_mismatch_rejected(tmp_path):
    arrays = _arrays(np.random.default_rng(2))
    arrays["xyz"] = arrays["xyz"][:, :1]
    with pytest.raises(ValueError, match="s0: array xyz"):
        store.write_scene(tmp_path, _attrs(), arrays)
    assert store.list_scenes(tmp_path, complete_only=False) == []


def test_gt_label_is_optional_and_its_fill_never_passes_for_data(tmp_path):
    import zarr

    rng = np.random.default_rng(1)
    arrays = _arrays(rng)
    store.write_scene(tmp_path, _attrs("video"), arrays)
    assert store.read_scene(tmp_path, "video").gt_label_Fhw is None  # a source without instances
    gt = rng.integers(-1, 6, size=arrays["label"].shape).astype(np.int32)
    store.write_scene(tmp_path, _attrs("toy"), {**arrays, "gt_label": gt})
    np.testing.assert_array_equal(store.read_scene(tmp_path, "toy").gt_label_Fhw, gt)
    with pytest.raises(ValueError, match="gt_label has shape"):
        store.write_scene(tmp_path, _attrs("bad"), {**arrays, "gt_label": gt[:, :1]})
    with pytest.raises(ValueError, match="below -1"):
        store.write_scene(tmp_path, _attrs("bad"), {**arrays, "gt_label": gt - 5})
    with pytest.raises(ValueError, match="unknown arrays"):
        store.write_scene(tmp_path, _attrs("bad"), {**arrays, "gt_labels": gt})
    # A chunk that was never written reads as the fill value, which the reader refuses.
    group = zarr.open_group(str(store.scene_path(tmp_path, "toy")), mode="a")
    assert group["gt_label"].fill_value < -1
    group["gt_label"][0] = group["gt_label"].fill_value
    with pytest.raises(ValueError, match="unwritten chunks|chunks missing"):
        store.read_scene(tmp_path, "toy")


def test_missing_chunks_never_read_as_data(tmp_path):
    import shutil

    import zarr

    rng = np.random.default_rng(0)
    arrays = _arrays(rng, num_frames=3)
    arrays["xyz"][1] = np.nan  # a frame with no valid point is still written, chunk and all
    store.write_scene(tmp_path, _attrs("s0"), arrays)
    assert store.missing_chunks(tmp_path, "s0") == []
    np.testing.assert_array_equal(store.read_scene(tmp_path, "s0").label_Fhw, arrays["label"])
    group = zarr.open_group(str(store.scene_path(tmp_path, "s0")), mode="r")
    assert np.isnan(group["xyz"].fill_value) and np.isnan(group["feat"].fill_value)
    assert group["label"].fill_value < -1
    # Delete one frame's chunk files: the group still carries `complete: true`, but reading names
    # the scene and the arrays instead of returning points at the origin with label 0.
    for name in ("xyz", "label"):
        shutil.rmtree(store.scene_path(tmp_path, "s0") / name / "c" / "1")
    assert store.is_complete(tmp_path, "s0")
    with pytest.raises(ValueError, match=r"scene s0: array xyz: 1 of 3 chunks missing.*array label: 1 of 3"):
        store.read_scene(tmp_path, "s0")


def test_a_corrupt_chunk_names_its_file(tmp_path):
    rng = np.random.default_rng(0)
    store.write_scene(tmp_path, _attrs("s0"), _arrays(rng, num_frames=3))
    chunk = store.scene_path(tmp_path, "s0") / "conf" / "c" / "2" / "0" / "0"
    chunk.write_bytes(b"not blosc")
    with pytest.raises(ValueError, match=f"scene s0: array conf: cannot decode chunk file {chunk}"):
        store.read_scene(tmp_path, "s0")


def test_a_corrupt_group_metadata_is_named(tmp_path):
    rng = np.random.default_rng(0)
    store.write_scene(tmp_path, _attrs("s0"), _arrays(rng))
    meta = store.scene_path(tmp_path, "s0") / "zarr.json"
    meta.write_text("{not json")
    assert not store.is_complete(tmp_path, "s0")
    assert str(meta) in store.unreadable_reason(tmp_path, "s0")


def test_a_replace_killed_half_way_is_recovered(tmp_path):
    from schemas.io import aside_path

    rng = np.random.default_rng(0)
    store.write_scene(tmp_path, _attrs("s0"), _arrays(rng))
    final = store.scene_path(tmp_path, "s0")
    final.rename(aside_path(final))  # killed after renaming the old group aside
    assert store.list_scenes(tmp_path) == []
    store.clean_partial(tmp_path)
    assert store.list_scenes(tmp_path) == ["s0"] and not aside_path(final).exists()
    store.read_scene(tmp_path, "s0")
