"""Every path of a workflow's output tree, named once: the stages write where this module says and
the next stage, the demo and the report read it from here.

    <out>/                              the data root (`out:`)
        features/<scene>/               the triplet store, one zarr group per scene
        features/_runs/                 the feature runs' reports
        stats/triplets.json             `p3d stats`
        proxies/<set>/                  a proxy shard set (`cluster.name`): index.json, shards,
                                        resolved_workflow.yaml, _runs/, viz/, view/
        annotations.jsonl               the records that come with the data (the toy world's)
        categories.json                 the toy world's category names
        models/<name>/                  models p3d builds itself (`toy:` and `random:` ids)
    <train.out>/stage<N>/               one training stage
        model/                          the exported model (the next stage's start)
        checkpoints/                    DeepSpeed checkpoints (resume)
        tb/, train_log.jsonl            TensorBoard events, the step log
        skipped_records.json            records that could not be examples, per task
        resolved_workflow.yaml          the workflow the stage ran with
    <demo.runs>/<name>/                 one demo run: report.md, resolved_workflow.yaml, logs/,
                                        main/ (predictions.jsonl, eval.json), ablations/, ask/,
                                        viz/<scene>.png, view/<scene>.html

Functions take the roots (`out`, `train.out`) so a stage that has only its config can name its
paths; `Layout.of(workflow)` names them for a whole workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.workflow import Workflow

FEATURES_DIR = "features"
RUNS_DIR = "_runs"  # run reports, inside the folder a run wrote
STATS_DIR = "stats"
STATS_FILE = "triplets.json"
PROXIES_DIR = "proxies"
RECORDS_FILE = "annotations.jsonl"
CATEGORIES_FILE = "categories.json"
MODELS_DIR = "models"
STAGE_PREFIX = "stage"
STAGE_MODEL = "model"
STAGE_CHECKPOINTS = "checkpoints"
STAGE_TENSORBOARD = "tb"
STAGE_LOG = "train_log.jsonl"
SKIPPED_FILE = "skipped_records.json"
RESOLVED_WORKFLOW = "resolved_workflow.yaml"
PREDICTIONS_FILE = "predictions.jsonl"
EVAL_FILE = "eval.json"
REPORT_FILE = "report.md"
PICTURES_DIR = "viz"  # `p3d viz` pictures, in a proxy set or a demo run
PAGES_DIR = "view"  # `p3d view` pages, in a proxy set or a demo run
DEMO_LOGS = "logs"
DEMO_MAIN = "main"  # the main run's predictions and scores
DEMO_ABLATIONS = "ablations"
DEMO_ASK = "ask"


def features_root(out: str | Path) -> Path:
    return Path(out) / FEATURES_DIR


def stats_path(out: str | Path) -> Path:
    return Path(out) / STATS_DIR / STATS_FILE


def proxies_root(out: str | Path) -> Path:
    return Path(out) / PROXIES_DIR


def proxies_dir(out: str | Path, name: str) -> Path:
    return proxies_root(out) / name


def is_proxy_set_dir(folder: str | Path) -> bool:
    """Is this folder where a layout puts a proxy set (`<out>/proxies/<set>`)?"""
    return Path(folder).parent.name == PROXIES_DIR


def models_dir(out: str | Path) -> Path:
    return Path(out) / MODELS_DIR


def data_records(out: str | Path) -> Path:
    return Path(out) / RECORDS_FILE


def stage_dir(train_out: str | Path, stage: int) -> Path:
    return Path(train_out) / f"{STAGE_PREFIX}{stage}"


def stage_model(train_out: str | Path, stage: int) -> Path:
    return stage_dir(train_out, stage) / STAGE_MODEL


def stage_checkpoints(train_out: str | Path, stage: int) -> Path:
    return stage_dir(train_out, stage) / STAGE_CHECKPOINTS


def scene_picture(folder: str | Path, scene_id: str) -> Path:
    """A scene's picture (`p3d viz`) in a proxy set's or a demo run's folder."""
    return Path(folder) / PICTURES_DIR / f"{scene_id}.png"


def scene_page(folder: str | Path, name: str) -> Path:
    """A scene's 3D page (`p3d view`) in a proxy set's or a demo run's folder: `<scene>`, `<scene>-ask`."""
    return Path(folder) / PAGES_DIR / f"{name}.html"


def records_path(workflow: Workflow, own: str | None = None) -> Path:
    """The records file a step reads, first found of:

    1. `own`, the step's own setting: a training stage's `records`, or `eval.records` for scoring;
    2. `train.records`;
    3. `eval.records`;
    4. `<out>/annotations.jsonl`, where the data's own records are (the toy world writes them there).

    Training a stage passes its `records`, scoring passes `eval.records`: each reads its own file
    when it names one, and otherwise the workflow's one file.
    """
    return Path(own or workflow.train.records or workflow.eval.records or data_records(workflow.out))


@dataclass(frozen=True)
class Layout:
    """The paths of one workflow's output tree (module docstring)."""

    out: Path
    train_out: Path
    run_dir: Path

    @classmethod
    def of(cls, workflow: Workflow) -> Layout:
        return cls(Path(workflow.out), Path(workflow.train.out), Path(workflow.demo.runs) / workflow.name)

    def proxies(self, name: str) -> Path:
        return proxies_dir(self.out, name)

    def stage_model(self, stage: int) -> Path:
        return stage_model(self.train_out, stage)
