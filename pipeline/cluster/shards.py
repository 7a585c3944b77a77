"""Proxy shards: encode one scene's proxies as WebDataset members and write/read the tars.

Tars are deterministic (fixed mtime, owner, mode and member order; JSON with sorted keys), written
to a temporary name, fsynced and renamed, so a shard on disk is always whole and the same store
and flags give byte-identical shards. Members are `.npy` (no pickle) and `.json`; see
`schemas.proxy`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from schemas.io import atomic_open
from schemas.layout import proxies_dir  # noqa: F401  (callers import it here)
from schemas.manifest import Box3D
from schemas.proxy import (
    FOCUS_MEMBERS, INDEX_FILE, MEMBERS, SHARD_PATTERN, ProxyMeta, SegmentInfo, check_proxy_format,
    check_sample_params, read_set_index,
)

_FIXED_MTIME = 0


def shard_name(index: int) -> str:
    return SHARD_PATTERN % index


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def check_key(scene_id: str) -> None:
    # WebDataset splits a member name at the first dot of its basename into key and extension.
    if not scene_id or "." in scene_id or "/" in scene_id:
        raise ValueError(f"scene {scene_id!r}: a shard key may not be empty or contain '.' or '/'")


def encode_sample(scene_id: str, proxies, meta: ProxyMeta, matching,
                  categories: dict[int, str], focus=None) -> dict[str, bytes]:
    """WebDataset sample (key + the members of `schemas.proxy.MEMBERS`) for one scene. `matching`
    (pipeline/cluster/matching.py) gives each segment its ground-truth instance; `categories` maps
    instance ids to categories, so a segment's category is its matched instance's. `focus`
    (pipeline/cluster/caption.py) adds the Scan2Cap members `FOCUS_MEMBERS`."""
    check_key(scene_id)
    if len(matching.instance_S) != len(proxies.segments):
        raise ValueError(f"scene {scene_id}: matching covers {len(matching.instance_S)} segments, "
                         f"the proxies have {len(proxies.segments)}")
    instance_S, iou_S = matching.instance_S, matching.iou_S
    segments = [
        SegmentInfo(
            id=i, label=seg.label, instance_id=instance_S[i],
            match_iou=None if iou_S[i] is None else round(iou_S[i], 4),
            category=None if instance_S[i] is None else categories.get(instance_S[i]),
            size=seg.size,
            proxies=seg.proxies, center=[float(v) for v in seg.center],
            box=Box3D.from_min_max(seg.box_min, seg.box_max), bfs_rank=i,
            merged_labels=seg.merged_labels,
        ).model_dump(mode="json")
        for i, seg in enumerate(proxies.segments)
    ]
    sample = {
        "__key__": scene_id,
        "feat.npy": npy_bytes(proxies.feat_KD.astype(np.float16)),
        "xyz.npy": npy_bytes(proxies.xyz_K3.astype(np.float32)),
        "segment.npy": npy_bytes(proxies.segment_K.astype(np.int32)),
        "segments.json": json_bytes(segments),
        "meta.json": json_bytes(meta.model_dump(mode="json")),
    }
    if focus is not None:
        sample["focus_feat.npy"] = npy_bytes(focus.feat_MD.astype(np.float16))
        sample["focus_xyz.npy"] = npy_bytes(focus.xyz_M3.astype(np.float32))
        sample["focus_segment.npy"] = npy_bytes(focus.segment_M.astype(np.int32))
    return sample


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(path: str | Path, samples: list[dict[str, bytes]]) -> Path:
    """Write samples to `path` atomically, in the given order."""
    from webdataset import TarWriter

    path = Path(path)
    with atomic_open(path, "wb") as stream:
        with TarWriter(stream, user="p3d", group="p3d", mode=0o444, encoder=False,
                       mtime=_FIXED_MTIME) as writer:
            for sample in samples:
                writer.write(sample)
    _fsync_dir(path.parent)
    return path


def read_shard(path: str | Path) -> dict[str, dict[str, bytes]]:
    """Raw members of every sample, keyed by scene id, in tar order; ValueError naming the file when
    the tar is truncated or corrupt."""
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, member = info.name.partition(".")
                samples.setdefault(key, {})[member] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError) as e:
        raise ValueError(f"{path}: unreadable shard tar ({type(e).__name__}: {e}); truncated or corrupt, "
                         "run `p3d cluster` again") from e
    return samples


def first_member(path: str | Path, member: str) -> bytes | None:
    """The first sample's `member`, reading no further into the tar than needed."""
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if info.isfile() and info.name.partition(".")[2] == member:
                return tar.extractfile(info).read()
    return None


def shard_keys(path: str | Path) -> list[str]:
    with tarfile.open(path, mode="r:") as tar:
        keys = [info.name.partition(".")[0] for info in tar if info.isfile()]
    return list(dict.fromkeys(keys))


def decode_sample(members: dict[str, bytes], where: str = "") -> dict[str, Any]:
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        raise ValueError(f"{where}: sample lacks members {missing}")
    check_proxy_format(json.loads(members["meta.json"]), where)
    sample = {
        "feat": np.load(io.BytesIO(members["feat.npy"]), allow_pickle=False),
        "xyz": np.load(io.BytesIO(members["xyz.npy"]), allow_pickle=False),
        "segment": np.load(io.BytesIO(members["segment.npy"]), allow_pickle=False),
        "segments": [SegmentInfo.model_validate(s) for s in json.loads(members["segments.json"])],
        "meta": ProxyMeta.model_validate(json.loads(members["meta.json"])),
    }
    if any(m in members for m in FOCUS_MEMBERS):
        missing = [m for m in FOCUS_MEMBERS if m not in members]
        if missing:
            raise ValueError(f"{where}: sample has some Scan2Cap focus members but lacks {missing}")
        for member in FOCUS_MEMBERS:  # "focus_feat.npy" -> sample["focus_feat"]
            sample[member.removesuffix(".npy")] = np.load(io.BytesIO(members[member]), allow_pickle=False)
    return sample


def read_index(root: str | Path) -> dict[str, str]:
    """Scene id -> shard file of a finished set (schemas.proxy.read_set_index refuses the others)."""
    return read_set_index(root)[1]


def load_scene_proxies(out: str | Path, name: str, scene_id: str) -> dict[str, Any]:
    """One scene's decoded sample, found through `index.json`."""
    root = proxies_dir(out, name)
    params, index = read_set_index(root)
    if scene_id not in index:
        raise ValueError(f"scene {scene_id}: not in {root / INDEX_FILE}")
    shard = root / index[scene_id]
    try:
        members = read_shard(shard)[scene_id]
    except (OSError, KeyError) as e:
        raise ValueError(f"{shard}: cannot read scene {scene_id} ({type(e).__name__}: {e}); "
                         "run `p3d cluster` again") from e
    sample = decode_sample(members, f"{shard}:{scene_id}")
    check_sample_params(sample["meta"].params, params, f"{shard}:{scene_id}", root / INDEX_FILE)
    return sample
