"""The Zarr v3 triplet store: one group per scene under `<out>/features/<scene_id>`.

Layout and attributes are defined in `schemas.store`. A scene is written into a hidden temporary
group, marked `complete: true` last, and renamed into place, so a killed run never leaves a group
that claims to be complete; a group without the marker is unfinished and is redone.

Legend: F frames, h x w patch grid, D feature dim.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.store import ARRAYS, FEATURES_DIR, NO_LABEL, OPTIONAL_ARRAYS, OPTIONAL_FILL, StoreAttrs

_TMP_PREFIX = ".tmp-"
# Named dimensions make each group readable as an xarray Dataset.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "feat": ("frame", "y", "x", "channel"),
    "xyz": ("frame", "y", "x", "coord"),
    "label": ("frame", "y", "x"),
    "conf": ("frame", "y", "x"),
    "pose": ("frame", "pose_row", "pose_col"),
    "intrinsics": ("frame", "k_row", "k_col"),
    "gt_label": ("frame", "y", "x"),
}


def features_root(out: str | Path) -> Path:
    return Path(out) / FEATURES_DIR


def scene_path(out: str | Path, scene_id: str) -> Path:
    return features_root(out) / scene_id


def _compressor():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def is_complete(out: str | Path, scene_id: str) -> bool:
    import zarr

    path = scene_path(out, scene_id)
    if not (path / "zarr.json").exists():
        return False
    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete", False))
    except Exception:  # unreadable metadata means unfinished
        return False


def list_scenes(out: str | Path, complete_only: bool = True) -> list[str]:
    root = features_root(out)
    if not root.exists():
        return []
    ids = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    return [s for s in ids if is_complete(out, s)] if complete_only else ids


def open_group(out: str | Path, scene_id: str):
    import zarr

    if not is_complete(out, scene_id):
        raise ValueError(f"scene {scene_id}: no complete triplet group at {scene_path(out, scene_id)}")
    return zarr.open_group(str(scene_path(out, scene_id)), mode="r")


@dataclass
class SceneTriplets:
    scene_id: str
    feat_FhwD: np.ndarray
    xyz_Fhw3: np.ndarray
    label_Fhw: np.ndarray
    conf_Fhw: np.ndarray
    pose_F44: np.ndarray
    intrinsics_F33: np.ndarray
    attrs: StoreAttrs
    gt_label_Fhw: np.ndarray | None = None  # ground-truth instance per patch, where the source has one


def _read_gt_label(group, scene_id: str) -> np.ndarray | None:
    if "gt_label" not in group:
        return None
    gt_label_Fhw = np.asarray(group["gt_label"][...])
    if gt_label_Fhw.size and gt_label_Fhw.min() < NO_LABEL:  # the fill value: a chunk never written
        raise ValueError(f"scene {scene_id}: array gt_label holds unwritten chunks (fill value); "
                         "re-run `p3d features` on this scene")
    return gt_label_Fhw


def read_scene(out: str | Path, scene_id: str) -> SceneTriplets:
    group = open_group(out, scene_id)
    arrays = {name: np.asarray(group[name][...]) for name in ARRAYS}
    return SceneTriplets(
        scene_id=scene_id,
        feat_FhwD=arrays["feat"],
        xyz_Fhw3=arrays["xyz"],
        label_Fhw=arrays["label"],
        conf_Fhw=arrays["conf"],
        pose_F44=arrays["pose"],
        intrinsics_F33=arrays["intrinsics"],
        attrs=StoreAttrs.model_validate(dict(group.attrs)),
        gt_label_Fhw=_read_gt_label(group, scene_id),
    )


def _check_arrays(scene_id: str, arrays: dict[str, np.ndarray]) -> None:
    missing = set(ARRAYS) - set(arrays)
    if missing:
        raise ValueError(f"scene {scene_id}: missing arrays {sorted(missing)}")
    unknown = set(arrays) - set(ARRAYS) - set(OPTIONAL_ARRAYS)
    if unknown:
        raise ValueError(f"scene {scene_id}: unknown arrays {sorted(unknown)}")
    num_frames, h, w = arrays["label"].shape
    expected = {
        "feat": (num_frames, h, w),
        "xyz": (num_frames, h, w, 3),
        "label": (num_frames, h, w),
        "conf": (num_frames, h, w),
        "pose": (num_frames, 4, 4),
        "intrinsics": (num_frames, 3, 3),
        "gt_label": (num_frames, h, w),
    }
    if "gt_label" in arrays and np.asarray(arrays["gt_label"]).min(initial=NO_LABEL) < NO_LABEL:
        raise ValueError(f"scene {scene_id}: gt_label values below {NO_LABEL} (-1 means no instance)")
    for name, shape in expected.items():
        if name not in arrays:
            continue
        got = arrays[name].shape
        if got[: len(shape)] != shape or (name != "feat" and got != shape):
            raise ValueError(f"scene {scene_id}: array {name} has shape {got}, expected {shape}")


def write_scene(out: str | Path, attrs: StoreAttrs, arrays: dict[str, np.ndarray]) -> Path:
    """Write one scene group atomically; any unfinished group of the same scene is replaced."""
    import zarr

    scene_id = attrs.scene_id
    _check_arrays(scene_id, arrays)
    root = features_root(out)
    root.mkdir(parents=True, exist_ok=True)
    final = scene_path(out, scene_id)
    tmp = root / f"{_TMP_PREFIX}{scene_id}-{uuid.uuid4().hex[:8]}"
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        optional = {name: dtype for name, dtype in OPTIONAL_ARRAYS.items() if name in arrays}
        for name, dtype in {**ARRAYS, **optional}.items():
            data = np.ascontiguousarray(arrays[name], dtype=dtype)
            # One chunk per frame: readers stream frames, and dask maps chunks to frames.
            chunks = (1, *data.shape[1:])
            arr = group.create_array(name, shape=data.shape, dtype=dtype, chunks=chunks,
                                     compressors=_compressor(), fill_value=OPTIONAL_FILL.get(name, 0),
                                     dimension_names=DIMENSIONS[name])
            arr[...] = data
        meta = attrs.model_dump(mode="json")
        meta["complete"] = False
        group.attrs.update(meta)
        group.attrs["complete"] = True  # last: the marker that the group is whole
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def clean_partial(out: str | Path) -> list[str]:
    """Remove temporary groups left by killed runs and incomplete scene groups; return their names."""
    root = features_root(out)
    removed = []
    if not root.exists():
        return removed
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    for scene_id in list_scenes(out, complete_only=False):
        if not is_complete(out, scene_id):
            shutil.rmtree(scene_path(out, scene_id), ignore_errors=True)
            removed.append(scene_id)
    return removed
