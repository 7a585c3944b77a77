"""Workflow files (`workflows/*.yaml`): one declarative recipe that the Makefile, the CLI and the
trainer all read. Sections: source, features, cluster, train, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.config_cluster import ClusterConfig
from schemas.config_features import FeaturesConfig
from schemas.config_train import TrainConfig
from schemas.errors import SchemaError, describe


class ToyWorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_scenes: int = Field(8, ge=1)
    frames: int = Field(48, ge=1)
    seed: int = 0
    image_size: tuple[int, int] = Field((240, 320), description="rendered H, W")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["toy", "scannet", "video"] = "toy"
    path: str = Field(description="folder of scenes (one sub-folder or .sens per scene), or videos")
    scenes: list[str] | None = Field(None, description="scene ids to run; default all")
    toy: ToyWorldConfig | None = None


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: str | None = None
    split: str = "val"
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(8, ge=1)


class AblationConfig(BaseModel):
    """The paper's ablations in miniature, run by `p3d demo` after the main chain."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    budgets: list[int] = Field(default_factory=lambda: [64, 128, 256], description="proxy budgets to compare")
    grouping_budget: int | None = Field(None, description="budget of the grouping vs --no-grouping pair "
                                                          "(default: cluster.proxies)")
    tasks: list[str] = Field(default_factory=lambda: ["object_name", "counting", "grounding"],
                             description="tasks each variant trains on (stage 4) and is scored on")
    epochs: float = Field(10.0, gt=0, description="stage-4 epochs of each variant, from the stage-3 model")
    oracle: bool = Field(True, description="add the oracle backends (geometry rgbd, segmenter instances) "
                                           "as a variant with its own features and clusters, when the "
                                           "main run uses others")


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: str = Field("runs", description="report goes to <runs>/<name>/report.md")
    viz_scenes: int = Field(2, ge=0, description="val scenes drawn into the report")
    jobs: int | None = Field(None, ge=1, description="after stage 3, the main stage 4 and each ablation "
                                                     "variant run this many at a time, the cores split "
                                                     "among them (default: one per core)")
    ablations: AblationConfig = AblationConfig()


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    out: str = Field(description="data root: features under <out>/features, proxies under <out>/proxies")
    source: SourceConfig
    features: FeaturesConfig = FeaturesConfig()
    cluster: ClusterConfig = ClusterConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    demo: DemoConfig = DemoConfig()


def _line_of(text: str, loc: tuple) -> int | None:
    """Best-effort line of a field path in YAML text (yaml's node marks)."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    nxt = (k, v)
                    break
            if nxt is None:
                return node.start_mark.line + 1
            node = nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node.start_mark.line + 1


def load_workflow(path: str | Path) -> Workflow:
    """Load and validate a workflow YAML; errors name the file, line and field."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise SchemaError(f"{path}: workflow file not found")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SchemaError(f"{path}{line}: invalid YAML: {e}") from e
    try:
        return Workflow.model_validate(data or {})
    except ValidationError as e:
        first = e.errors()[0]["loc"] if e.errors() else ()
        raise describe(e, path, _line_of(text, tuple(first))) from e
