"""The output tree's paths (schemas/layout.py): one order for the records file, used by every reader."""

from __future__ import annotations

from pathlib import Path

from schemas.config_train import StageConfig
from schemas.layout import Layout, scene_page, scene_picture, records_path
from schemas.workflow import Workflow


def _workflow(train_records=None, eval_records=None, stages=()) -> Workflow:
    return Workflow.model_validate({
        "name": "w", "out": "/data/w", "source": {"kind": "toy", "path": "/data/w/scenes"},
        "train": {"records": train_records, "out": "/runs/w/train", "stages": list(stages)},
        "eval": {"records": eval_records}, "demo": {"runs": "/runs"}})


def test_records_path_order_own_then_train_then_eval_then_the_data_root():
    both = _workflow(train_records="/t.jsonl", eval_records="/e.jsonl")
    assert records_path(both, "/own.jsonl") == Path("/own.jsonl")
    assert records_path(both) == Path("/t.jsonl")
    assert records_path(_workflow(eval_records="/e.jsonl")) == Path("/e.jsonl")
    assert records_path(_workflow()) == Path("/data/w/annotations.jsonl")


def test_training_and_scoring_read_their_own_records_first():
    from p3d.demo.steps import records_path as demo_records
    from trainer.train import records_path as stage_records

    stage = {"stage": 4, "trainable": ["projector"], "records": "/s4.jsonl"}
    wf = _workflow(train_records="/t.jsonl", eval_records="/e.jsonl", stages=[stage])
    assert demo_records(wf) == Path("/e.jsonl")  # the demo scores eval's records
    assert stage_records(wf, wf.train, wf.train.stage(4)) == Path("/s4.jsonl")
    unlisted = _workflow(train_records="/t.jsonl", eval_records="/e.jsonl")
    stage4 = StageConfig(**(stage | {"records": None}))
    assert stage_records(unlisted, unlisted.train, stage4) == Path("/t.jsonl")
    # a run's override of train.records (resolve_train_config) is what the stage reads
    overridden = unlisted.train.model_copy(update={"records": "/cli.jsonl"})
    assert stage_records(unlisted, overridden, stage4) == Path("/cli.jsonl")
    assert demo_records(_workflow(train_records="/t.jsonl")) == Path("/t.jsonl")


def test_layout_of_a_workflow_names_its_folders():
    lay = Layout.of(_workflow())
    assert lay.proxies("default") == Path("/data/w/proxies/default")
    assert lay.stage_model(3) == Path("/runs/w/train/stage3/model")
    assert lay.run_dir == Path("/runs/w")
    assert scene_picture(lay.run_dir, "s1") == Path("/runs/w/viz/s1.png")
    assert scene_page(lay.run_dir, "s1-ask") == Path("/runs/w/view/s1-ask.html")
