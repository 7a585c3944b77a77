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
    unlabeled_cell: float = Field(2.0, gt=0, description="metres; voxel cell grouping unlabeled patches")
    unlabeled_min_size: int = Field(8, ge=1, description="unlabeled cells below this join the nearest cell")
    bfs_neighbors: int = Field(6, ge=1)
    seed: int = 0
    match_iou: float = Field(0.25, gt=0, le=1, description="least triplet-overlap IoU for a segment to be "
                                                           "matched to a ground-truth instance")
    scenes_per_shard: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=1, description="parallel scenes (Ray tasks)")
    executor: Literal["auto", "ray", "local"] = Field(
        "auto", description="auto: Ray when there is more than one scene and num_workers > 1")
    stats: str | None = Field(None, description="feature stats JSON for whitening; default <out>/stats/triplets.json")
