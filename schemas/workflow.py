"""Workflow files (`workflows/*.yaml`): one declarative recipe that the Makefile, the CLI and the
trainer all read. Sections: source, features, cluster, train, eval, demo. A file may start from
another and change only what differs (`extends: toy.yaml`; mappings merge, null removes a key, lists
are given whole).

Every command finds its workflow the same way (`resolve_workflow`): `--workflow PATH`, else the
`P3D_WORKFLOW` environment variable, else the embedded default `workflows/toy.yaml` of this
repository. `--set section.key=value` (repeatable) then changes any field; the value is read as a
YAML scalar or list, and the result is validated by the same models as the file, so an override's
error names it (`--set cluster.proxies: field 'cluster.proxies': ...`) as a file's names its line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.config_cluster import ClusterConfig
from schemas.config_features import FeaturesConfig
from schemas.config_train import TrainConfig
from schemas.errors import SchemaError, describe


class ToyWorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_scenes: int = Field(8, ge=1)
    val_scenes: int | None = Field(None, ge=0, description="how many of the last scenes are held out (split "
                                                          "val); default a quarter, at least one of two or more")
    frames: int = Field(48, ge=1)
    seed: int = 0
    image_size: tuple[int, int] = Field((240, 320), description="rendered H, W")

    @model_validator(mode="after")
    def _val_within_world(self) -> ToyWorldConfig:
        if self.val_scenes is not None and self.val_scenes > self.num_scenes:
            raise ValueError(f"val_scenes ({self.val_scenes}) is more than num_scenes ({self.num_scenes})")
        return self


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field("toy", description="a source plugin's name (group p3d.sources in pyproject.toml: "
                                         "scannet, video, toy)")
    path: str = Field(description="folder of scenes (one sub-folder or .sens per scene), or videos")
    scenes: list[str] | None = Field(None, description="scene ids to run; default all")
    toy: ToyWorldConfig | None = None

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        # The registry reads installed entry points only (no pipeline module is imported), so schemas
        # stays below the stages.
        from schemas.plugins import SOURCES, check_name

        return check_name(SOURCES, kind)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: str | None = Field(None, description="the records scored; default: train.records, else "
                                                  "<out>/annotations.jsonl (schemas/layout.py: records_path)")
    split: str = "val"
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(8, ge=1)
    mbr_tasks: list[str] = Field(default_factory=list, description="tasks with number answers decoded by "
                                 "minimum Bayes risk under MRA over `mbr_samples` samples (trainer/predict.py); "
                                 "default none: greedy, as the benchmarks' own evaluations decode")
    mbr_samples: int = Field(32, ge=2)


class AblationConfig(BaseModel):
    """The paper's ablations in miniature, run by `p3d demo` after the main chain."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    budgets: list[int] = Field(default_factory=lambda: [64, 128, 256], description="proxy budgets to compare")
    grouping_budget: int | None = Field(None, description="budget of the grouping vs --no-grouping pair "
                                                          "(default: cluster.proxies)")
    grouping_pair: bool = Field(True, description="run the grouping vs --no-grouping pair; off, the budgets "
                                                  "and the position-id variant remain")
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
    beyond_budget: dict[str, str] = Field(
        default_factory=dict,
        description="task -> where it is measured that the demo's minutes do not train it above chance "
                    "(a docs/RESULTS.md section); the report names such a task beside its score when it is at "
                    "or under chance, and any other task at or under chance as not expected")


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    out: str = Field(description="data root: features under <out>/features, proxies under <out>/proxies "
                                 "(schemas/layout.py names every path)")
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


def _unique_key_loader():
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently, so
    a second `cluster:` section would replace the first), naming both lines."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: the base constructor reports it
                        continue
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1}, "
                                        f"again on line {key_node.start_mark.line + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _read_yaml(path: Path) -> tuple[str, dict]:
    import yaml

    if not path.exists():
        raise SchemaError(f"{path}: workflow file not found")
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: no Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)  # yaml's own text adds a multi-line excerpt
        raise SchemaError(f"{path}{line}: invalid YAML: {problem}") from e
    if data is not None and not isinstance(data, dict):
        raise SchemaError(f"{path}: a workflow is a mapping of sections, got {type(data).__name__}")
    return text, data or {}


def _extended(path: Path, data: dict, seen: frozenset[Path]) -> dict:
    """The workflow `data` read from `path` over the one its `extends:` names (a path relative to
    `path`'s folder), recursively, as a merge patch (`_merged`): mappings merge key by key, null
    removes a key, any other value (a list included, so a `train.stages` list is given whole)
    replaces the base's."""
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise SchemaError(f"{path}: extends: expected a workflow file's path, got {base_name!r}")
    base_path = path.parent / base_name
    if base_path.resolve() in seen | {path.resolve()}:
        raise SchemaError(f"{path}: extends: {base_name} extends this file again (a cycle)")
    base = _extended(base_path, _read_yaml(base_path)[1], seen | {path.resolve()})
    return _merged(base, data)


def _merged(base: dict, over: dict) -> dict:
    """`over` on `base` as a JSON merge patch (RFC 7386): mappings merge, null removes the key (the
    field then takes its default), anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merged(base[key], value)
        else:
            out[key] = value
    return out


def load_workflow(path: str | Path, sets: list[str] | None = None) -> Workflow:
    """Load and validate a workflow YAML, with `--set key=value` overrides applied; errors name the
    file, line and field, or the override. A workflow may start from another (`extends: toy.yaml`,
    see `_extended`)."""
    path = Path(path)
    text, data = _read_yaml(path)
    data = _extended(path, data, frozenset())
    overrides = parse_sets(sets or [])
    for key, value in overrides.items():
        _apply(data, key, value)
    try:
        return Workflow.model_validate(data)
    except ValidationError as e:
        first = tuple(e.errors()[0]["loc"]) if e.errors() else ()
        key = _override_of(first, overrides)
        if key is not None:
            raise describe(e, f"--set {key}") from e
        raise describe(e, path, _line_of(text, first)) from e


# ------------------------------------------------------------------ which workflow, and overrides
WORKFLOW_ENV = "P3D_WORKFLOW"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "toy.yaml"


@dataclass(frozen=True)
class ResolvedWorkflow:
    """A command's workflow: the file, why that file, the `--set` overrides and the result."""

    path: Path
    why: str
    sets: tuple[str, ...]
    workflow: Workflow
    file_workflow: Workflow = field(repr=False)  # the file alone, before the overrides

    def save(self, path: str | Path, **ran) -> Path:
        """Write the resolved workflow (every default filled in) beside a run's outputs, atomically;
        `ran` replaces whole sections with what a command's own flags made of them (`cluster=...`)."""
        import yaml

        from schemas.io import atomic_open

        wf = self.workflow.model_copy(update=ran) if ran else self.workflow
        with atomic_open(path) as f:
            f.write(f"# resolved {banner(self.path, self.why, self.sets)}\n")
            yaml.safe_dump(wf.model_dump(mode="json"), f, sort_keys=False)
        return Path(path)


def workflow_path(given: str | Path | None) -> tuple[Path, str]:
    """The workflow file a command uses, and why: `--workflow`, else $P3D_WORKFLOW, else the default."""
    if given is not None and str(given) != "":
        return Path(given), "--workflow"
    env = os.environ.get(WORKFLOW_ENV, "").strip()
    if env:
        return Path(env), f"from {WORKFLOW_ENV}"
    return DEFAULT_WORKFLOW, f"the embedded default; --workflow or {WORKFLOW_ENV} to change"


def banner(path: Path, why: str, sets: tuple[str, ...] = ()) -> str:
    """The first line every command prints: which workflow, why, and its overrides."""
    return f"workflow: {shown_path(path)} ({why})" + "".join(f" --set {s}" for s in sets)


def resolve_workflow(given: str | Path | None, sets: list[str] | tuple[str, ...] | None = None,
                     echo=None) -> ResolvedWorkflow:
    """Find (`workflow_path`), load and validate a command's workflow with its `--set` overrides;
    `echo` gets the banner line first, before anything can fail."""
    path, why = workflow_path(given)
    sets = tuple(sets or ())
    if echo is not None:
        echo(banner(path, why, sets))
    wf = load_workflow(path, list(sets))
    base = load_workflow(path) if sets else wf
    return ResolvedWorkflow(path, why, sets, wf, base)


def parse_sets(sets: list[str]) -> dict[str, object]:
    """`["cluster.proxies=700", "source.scenes=[a, b]"]` -> {"cluster.proxies": 700, ...}; values
    are YAML (`700` an int, `[a, b]` a list, `null` None); a later key wins."""
    import yaml

    parsed: dict[str, object] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise SchemaError(f"--set {item}: expected section.key=value (e.g. cluster.proxies=700)")
        try:
            parsed[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise SchemaError(f"--set {key}: value {raw!r} is not valid YAML "
                              f"({getattr(e, 'problem', None) or 'parse error'})") from e
    return parsed


def _apply(data: dict, key: str, value: object) -> None:
    """Set a dotted key in the raw workflow data; a number indexes a list (`train.stages.0.epochs`)."""
    node: object = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i]) or "the workflow"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SchemaError(f"--set {key}: {where} is a list of {len(node)}; use an index 0-{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise SchemaError(f"--set {key}: {where} is a value ({node!r}), not a section")


def _override_of(loc: tuple, overrides: dict[str, object]) -> str | None:
    """The override a validation error is about: the longest key that is a prefix of the error's
    field, or that the field is a prefix of (a missing required field inside a replaced section)."""
    field_parts = [str(p) for p in loc]
    if not field_parts:
        return None
    best = None
    for key in overrides:
        parts = key.split(".")
        n = min(len(parts), len(field_parts))
        if parts[:n] == field_parts[:n] and (best is None or len(parts) > len(best.split("."))):
            best = key
    return best


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
