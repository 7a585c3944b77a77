"""Cluster-stage configuration (the `cluster:` section of a workflow and `p3d cluster` flags), and
how a proxy set is named when the command line changes the workflow's clustering."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("default", description="output folder under <out>/proxies/")
    proxies: int = Field(700, ge=1, description="proxy budget K per scene")
    min_per_group: int = Field(1, ge=0)
    grouping: bool = Field(True, description="false: plain clustering over the whole scene (ablation)")
    space: Literal["xyz", "xyz+feat"] = "xyz"
    feat_weight: float = Field(1.0, ge=0, description="weight of whitened features in xyz+feat space")
    per_object: int | None = Field(None, ge=1, description="N proxies per object (captioning ablation)")
    caption_proxies: int | None = Field(None, ge=1, description="Scan2Cap: also store, for each object, N "
                                        "proxies of its own to swap in when it is the one captioned "
                                        "(paper Table 5: 5 best); pipeline/cluster/caption.py")
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

    @field_validator("min_per_group")
    @classmethod
    def _min_fits_the_budget(cls, value: int, info: ValidationInfo) -> int:
        # Refused here, before a run writes anything: every scene would fail its allocation.
        proxies = info.data.get("proxies")
        if proxies is not None and value > proxies:
            raise ValueError(f"min_per_group {value} exceeds proxies {proxies} (the whole per-scene budget); "
                             "lower min_per_group or raise proxies")
        return value


# How a set is written, not what is in it: neither part of a derived set name nor of the parameters
# a shard records (pipeline/cluster/driver.py).
RUN_FIELDS = frozenset({"name", "scenes_per_shard", "num_workers", "executor"})

# The parameters that change the proxies, each as it appears in a derived set name. The others
# (RUN_FIELDS) change how the set is written, not what is in it.
_NAME_PARTS = {
    "proxies": lambda v: f"k{v}",
    "grouping": lambda v: "grouping" if v else "no-grouping",
    "space": lambda v: v.replace("+", ""),
    "feat_weight": lambda v: f"fw{v:g}",
    "per_object": lambda v: "per-object-off" if v is None else f"per-object{v}",
    "caption_proxies": lambda v: "caption-off" if v is None else f"caption{v}",
    "min_per_group": lambda v: f"min{v}",
    "unlabeled_cell": lambda v: f"cell{v:g}",
    "unlabeled_min_size": lambda v: f"cellmin{v}",
    "bfs_neighbors": lambda v: f"bfs{v}",
    "seed": lambda v: f"seed{v}",
    "match_iou": lambda v: f"iou{v:g}",
    "stats": lambda v: "stats-" + str(v).replace("/", "_").removesuffix(".json"),
}


def derived_name(workflow: ClusterConfig, run: ClusterConfig) -> str:
    """The proxy set a run writes when no name is given: the workflow's own `cluster.name` when the
    run clusters exactly as the workflow says, else the parameters that differ, in a fixed order and
    joined by '-' (`--proxies 700` -> `k700`; `--proxies 700 --no-grouping` -> `k700-no-grouping`;
    `--seed 3` -> `seed3`). So an override never rewrites the set the workflow trains on."""
    parts = [fmt(getattr(run, key)) for key, fmt in _NAME_PARTS.items()
             if getattr(run, key) != getattr(workflow, key)]
    return "-".join(parts) if parts else workflow.name
