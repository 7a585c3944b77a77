"""The Zarr v3 triplet store: one group per scene under `<out>/features/<scene_id>`.

Layout and attributes are defined in `schemas.store`. A scene is written into a hidden temporary
group, marked `complete: true` last, and renamed into place (`schemas.io.replace_dir`: the old group
is deleted only after the new one is in), so a killed run never leaves a group that claims to be
complete; a group without the marker is unfinished and is redone. Chunks that are missing (a deleted
frame) are found by counting chunk files, and fill values can never pass for data, so a damaged group
is an error naming the scene and the array, never points at the origin.

Legend: F frames, h x w patch grid, D feature dim.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.io import recover_dir, replace_dir
from schemas.layout import features_root
from schemas.store import ARRAYS, FILL_VALUES, NO_LABEL, OPTIONAL_ARRAYS, StoreAttrs

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


def unreadable_reason(out: str | Path, scene_id: str) -> str | None:
    """Why a scene group's metadata cannot be read (the file named), or None when it can."""
    import zarr

    path = scene_path(out, scene_id)
    if not (path / "zarr.json").exists():
        return None
    try:
        json.loads((path / "zarr.json").read_text())
        zarr.open_group(str(path), mode="r").attrs.get("complete", False)
    except Exception as e:
        return f"unreadable group metadata {path / 'zarr.json'}: {type(e).__name__}: {e}"
    return None


def missing_chunks(out: str | Path, scene_id: str) -> list[str]:
    """Arrays of a group with chunk files missing, as 'array NAME: N of M chunks missing'. Cheap: it
    counts files (one chunk per frame, zarr v3's `c/` keys) against the arrays' shapes."""
    path = scene_path(out, scene_id)
    problems = []
    for name in [*ARRAYS, *OPTIONAL_ARRAYS]:
        meta_path = path / name / "zarr.json"
        if not meta_path.exists():
            if name in ARRAYS:
                problems.append(f"array {name}: missing ({meta_path} not found)")
            continue
        try:
            meta = json.loads(meta_path.read_text())
            shape = meta["shape"]
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"array {name}: unreadable metadata {meta_path}: {type(e).__name__}: {e}")
            continue
        expected = math.prod(-(-n // c) for n, c in zip(shape, chunks))
        chunk_dir = path / name / "c"
        found = sum(1 for p in chunk_dir.rglob("*") if p.is_file()) if chunk_dir.is_dir() else 0
        if found < expected:
            problems.append(f"array {name}: {expected - found} of {expected} chunks missing under {chunk_dir}")
    return problems


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


def _read_array(group, path: Path, scene_id: str, name: str) -> np.ndarray:
    """The whole array; a chunk that cannot be decoded is an error naming its file."""
    arr = group[name]
    try:
        return np.asarray(arr[...])
    except Exception:
        pass
    for i in range(arr.shape[0]):  # one chunk per frame: find the file that fails
        try:
            arr[i]
        except Exception as e:
            key = "/".join(["c", str(i)] + ["0"] * (arr.ndim - 1))
            raise ValueError(f"scene {scene_id}: array {name}: cannot decode chunk file {path / name / key} "
                             f"({type(e).__name__}: {e}); re-run `p3d features --overwrite` on this scene") from e
    return np.asarray(arr[...])


def _check_labels(name: str, label_Fhw: np.ndarray, scene_id: str) -> np.ndarray:
    if label_Fhw.size and label_Fhw.min() < NO_LABEL:  # the fill value: a chunk never written
        raise ValueError(f"scene {scene_id}: array {name} holds unwritten chunks (fill value); "
                         "re-run `p3d features` on this scene")
    return label_Fhw


def read_scene(out: str | Path, scene_id: str) -> SceneTriplets:
    group = open_group(out, scene_id)
    path = scene_path(out, scene_id)
    missing = missing_chunks(out, scene_id)
    if missing:
        raise ValueError(f"scene {scene_id}: {'; '.join(missing)}; re-run `p3d features --overwrite` on "
                         "this scene")
    names = [*ARRAYS, *(n for n in OPTIONAL_ARRAYS if n in group)]
    arrays = {name: _read_array(group, path, scene_id, name) for name in names}
    for name in ("label", "gt_label"):
        if name in arrays:
            _check_labels(name, arrays[name], scene_id)
    return SceneTriplets(
        scene_id=scene_id,
        feat_FhwD=arrays["feat"],
        xyz_Fhw3=arrays["xyz"],
        label_Fhw=arrays["label"],
        conf_Fhw=arrays["conf"],
        pose_F44=arrays["pose"],
        intrinsics_F33=arrays["intrinsics"],
        attrs=StoreAttrs.model_validate(dict(group.attrs)),
        gt_label_Fhw=arrays.get("gt_label"),
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
            # Every chunk is written, even one equal to the fill value (an all-invalid frame):
            # readers count chunk files to tell a whole group from a damaged one.
            arr = group.create_array(name, shape=data.shape, dtype=dtype, chunks=chunks,
                                     compressors=_compressor(), fill_value=FILL_VALUES[name],
                                     dimension_names=DIMENSIONS[name],
                                     config={"write_empty_chunks": True})
            arr[...] = data
        meta = attrs.model_dump(mode="json")
        meta["complete"] = False
        group.attrs.update(meta)
        group.attrs["complete"] = True  # last: the marker that the group is whole
        replace_dir(tmp, final)
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
    for p in list(root.iterdir()):
        if p.is_dir() and p.name.startswith(".") and p.name.endswith(".aside"):
            recover_dir(root / p.name[1:-len(".aside")])  # a replace_dir killed half way
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    for scene_id in list_scenes(out, complete_only=False):
        if not is_complete(out, scene_id):
            shutil.rmtree(scene_path(out, scene_id), ignore_errors=True)
            removed.append(scene_id)
    return removed
