"""Proxy shard members: WebDataset tars `<out>/proxies/<name>/shard-%06d.tar`, one sample per scene.

Members of a sample keyed by scene id:
  feat.npy      float16  K x D
  xyz.npy       float32  K x 3
  segment.npy   int32    K       index into segments.json, BFS-ordered and contiguous
  segments.json list of `SegmentInfo`
  meta.json     `ProxyMeta`
`index.json` ({"format": 2, "params": the clustering parameters, "scenes": scene id -> shard file
name}) is written last; a cluster run removes it before it writes anything, so a set without it is
unfinished, and readers refuse a sample whose meta.json parameters are not the index's (a mixed set).

Format 2 (`PROXY_FORMAT_VERSION`, recorded in meta.json): each segment carries `instance_id` and
`match_iou`, the ground-truth instance it was matched to by triplet overlap (pipeline/cluster/
matching.py) or null, and `category` is that instance's; a segment's `label` is the segmenter's own
id and names nothing in a dataset. Shards without a format version (format 1 took labels for
instance ids) are refused by `check_proxy_format`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.layout import proxies_dir, proxies_root
from schemas.manifest import Box3D

SHARD_PATTERN = "shard-%06d.tar"
INDEX_FILE = "index.json"
MEMBERS = ("feat.npy", "xyz.npy", "segment.npy", "segments.json", "meta.json")
# Only in sets clustered with `caption_proxies` (Scan2Cap, pipeline/cluster/caption.py): N proxies of
# each instance segment alone (float16 M x D, float32 M x 3, int32 M: the segment's BFS rank), to swap
# in for that segment's block when it is the object being captioned.
FOCUS_MEMBERS = ("focus_feat.npy", "focus_xyz.npy", "focus_segment.npy")


INDEX_FORMAT = 2  # 2: {"format", "params", "scenes"}; 1 was the bare scene -> shard map


def index_payload(params: dict[str, Any], scenes: dict[str, str]) -> dict[str, Any]:
    """The content of `index.json` for a set made with `params` (meta.json's `params`)."""
    return {"format": INDEX_FORMAT, "params": params, "scenes": dict(scenes)}


def read_set_index(folder: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(params, scene id -> shard) of a finished proxy set; ValueError naming the file otherwise."""
    import json

    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no proxy index; the set is missing or unfinished (a cluster run writes it "
                         "last): run `p3d cluster`")
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: unreadable proxy index ({e}); run `p3d cluster` again") from e
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        found = index.get("format", 1) if isinstance(index, dict) else "?"
        raise ValueError(f"{path}: proxy index format {found}, expected {INDEX_FORMAT} (the index now records "
                         "the set's parameters); run `p3d cluster` again")
    if not isinstance(index.get("params"), dict) or not isinstance(index.get("scenes"), dict):
        raise ValueError(f"{path}: proxy index lacks 'params' or 'scenes'; run `p3d cluster` again")
    return index["params"], index["scenes"]


def check_sample_params(made_with: Any, params: dict[str, Any], where: str, index_path: str | Path) -> None:
    """ValueError unless a sample (its meta.json `params`) was made with the parameters its set's index
    records."""
    if made_with != params:
        raise ValueError(f"{where}: made with other clustering parameters than {index_path} records (a "
                         "mixed shard set, e.g. from a killed re-cluster); run `p3d cluster` again")


def proxy_sets(out: str | Path) -> list[str]:
    """The finished proxy sets under `<out>/proxies/` (those with an index), sorted."""
    root = proxies_root(out)
    return sorted(p.name for p in root.iterdir() if (p / INDEX_FILE).is_file()) if root.is_dir() else []


def missing_set_error(out: str | Path, name: str) -> str | None:
    """None when `<out>/proxies/<name>` is a finished set, else a message listing the sets that are."""
    folder = proxies_dir(out, name)
    if (folder / INDEX_FILE).is_file():
        return None
    there = proxy_sets(out)
    listed = f"the sets there: {', '.join(there)}" if there else "there are none yet"
    return (f"proxy set {name!r} not found ({folder} has no {INDEX_FILE}); {listed}. "
            f"`p3d cluster` makes one (`--name {name}` to name it so)")


PROXY_FORMAT_VERSION = 2


def check_proxy_format(meta: dict[str, Any], where: str) -> None:
    """ValueError unless a sample's meta.json is of the current format."""
    version = meta.get("format_version", 1) if isinstance(meta, dict) else None
    if version != PROXY_FORMAT_VERSION:
        raise ValueError(f"{where}: proxy shard format {version}, expected {PROXY_FORMAT_VERSION} "
                         "(segments now carry matched ground-truth instance ids); re-run `p3d cluster`")


class SegmentInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, description="position of the segment in BFS order")
    label: int = Field(description="the segmenter's label from the store (its own numbering, not a "
                                   "dataset id); -1 for an unlabeled spatial group")
    instance_id: int | None = Field(description="ground-truth instance matched to this segment, or null")
    match_iou: float | None = Field(ge=0, le=1, description="triplet-overlap IoU of that match, or null")
    category: str | None = Field(None, description="category of the matched instance")
    size: int = Field(ge=0, description="number of triplets in the segment")
    proxies: int = Field(ge=0)
    center: list[float]
    box: Box3D
    bfs_rank: int = Field(ge=0)
    merged_labels: list[int] = []


class ProxyMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    format_version: int = PROXY_FORMAT_VERSION
    scene_id: str
    num_proxies: int = Field(ge=0)
    budget: int = Field(ge=1)
    dim: int = Field(ge=1)
    num_valid_triplets: int = Field(ge=0)
    params: dict[str, Any]
    source: dict[str, Any] = {}
    notes: list[str] = []
    matching: dict[str, Any] | None = Field(
        None, description="ground-truth matching: instances, matched, unmatched ids, min_iou; "
                          "null when the store has no ground-truth instances")
