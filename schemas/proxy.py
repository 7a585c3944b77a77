"""Proxy shard members: WebDataset tars `<out>/proxies/<name>/shard-%06d.tar`, one sample per scene.

Members of a sample keyed by scene id:
  feat.npy      float16  K x D
  xyz.npy       float32  K x 3
  segment.npy   int32    K       index into segments.json, BFS-ordered and contiguous
  segments.json list of `SegmentInfo`
  meta.json     `ProxyMeta`
`index.json` (scene id -> shard file name) is written last.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.manifest import Box3D

SHARD_PATTERN = "shard-%06d.tar"
INDEX_FILE = "index.json"
MEMBERS = ("feat.npy", "xyz.npy", "segment.npy", "segments.json", "meta.json")


class SegmentInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0, description="position of the segment in BFS order")
    label: int = Field(description="instance label from the store; -1 for an unlabeled spatial group")
    category: str | None = None
    size: int = Field(ge=0, description="number of triplets in the segment")
    proxies: int = Field(ge=0)
    center: list[float]
    box: Box3D
    bfs_rank: int = Field(ge=0)
    merged_labels: list[int] = []


class ProxyMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    scene_id: str
    num_proxies: int = Field(ge=0)
    budget: int = Field(ge=1)
    dim: int = Field(ge=1)
    num_valid_triplets: int = Field(ge=0)
    params: dict[str, Any]
    source: dict[str, Any] = {}
    notes: list[str] = []
