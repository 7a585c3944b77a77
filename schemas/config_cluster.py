"""Cluster-stage configuration (the `cluster:` section of a workflow and `p3d cluster` flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("default", description="output folder under <out>/proxies/")
    proxies: int = Field(700, ge=1, description="proxy budget K per scene")
    min_per_group: int = Field(1, ge=0)
    grouping: bool = Field(True, description="false: plain clustering over the whole scene (ablation)")
    space: Literal["xyz", "xyz+feat"] = "xyz"
    feat_weight: float = Field(1.0, ge=0, description="weight of whitened features in xyz+feat space")
    per_object: int | None = Field(None, ge=1, description="N proxies per object (captioning ablation)")
    unlabeled_cell: float = Field(0.5, gt=0, description="metres; spatial grouping of unlabeled patches")
    bfs_neighbors: int = Field(6, ge=1)
    seed: int = 0
    scenes_per_shard: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=1)
