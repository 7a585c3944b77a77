"""`p3d eval` on the toy world's records (the toy annotator's real output) and predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.eval.evaluate import evaluate, format_table
from pipeline.eval.predictions import Prediction, write_predictions
from schemas.record import Record, write_records

toy_layout = pytest.importorskip("pipeline.toy.layout")
toy_annotate = pytest.importorskip("pipeline.toy.annotate")
toy_world = pytest.importorskip("pipeline.toy.world")


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    records, objects = [], {}
    for i in range(2):
        layout = toy_layout.sample_layout(rng)
        scene_id = f"toy{i:04d}"
        records += toy_annotate.generate_records(layout, scene_id, "val", rng)
        objects[scene_id] = toy_world.objects_of(layout)
    return records, objects


def oracle(rec: Record) -> Prediction:
    if rec.answer_type == "objects":
        return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text="",
                          instance_ids=list(rec.target_ids), boxes=list(rec.target_boxes))
    return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text=rec.answers[0])


def wrong(rec: Record) -> Prediction:
    """A deliberately poor model: the same wrong answer everywhere, no objects."""
    if rec.answer_type == "objects":
        return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text="", instance_ids=[], boxes=[])
    return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text="zzz 999")


def test_toy_perfect_and_wrong_predictions(toy):
    records, objects = toy
    records = [r for r in records if r.task != "caption"]  # caption scores need Java: slow test below
    tasks = {r.task for r in records}
    assert {"object_name", "object_id", "counting", "distance", "room_size", "relative_direction",
            "grounding", "multi_grounding"} <= tasks
    results = evaluate(records, {r.id: oracle(r) for r in records}, "all", objects)
    assert {res.name.split("/")[1] for res in results} == tasks
    for res in results:
        for metric, value in res.metrics.items():
            assert value == pytest.approx(100.0), (res.name, metric)
    bad = evaluate(records, {r.id: wrong(r) for r in records}, "all", objects)
    scores = {res.name: res.metrics for res in bad}
    assert scores["toy/object_name"]["EM"] == 0.0 and scores["toy/grounding"]["Acc@0.25"] == 0.0
    # Predicting "no object" is right exactly on the zero-target queries.
    mg = [r for r in records if r.task == "multi_grounding"]
    zero_share = 100.0 * sum(not r.target_ids for r in mg) / len(mg)
    assert scores["toy/multi_grounding"]["F1@0.5"] == pytest.approx(zero_share)
    chance = {res.name: res.chance for res in bad}
    assert chance["toy/relative_direction"]["Acc"] == 50.0
    oid = [r for r in records if r.task == "object_id"]
    assert chance["toy/object_id"]["EM"] == pytest.approx(
        100.0 * np.mean([1 / len(objects[r.scene_id]) for r in oid]))
    assert 0.0 < chance["toy/grounding"]["Acc@0.25"] < 100.0
    table = format_table(bad)
    assert "toy/counting" in table and "chance" in table.splitlines()[0]


@pytest.mark.slow
def test_cli_eval_all_on_toy(toy, tmp_path):
    from p3d.cli import app

    records, objects = toy
    write_records(records, tmp_path / "records.jsonl")
    write_predictions([oracle(r) for r in records], tmp_path / "preds.jsonl")
    (tmp_path / "objects.json").write_text(json.dumps({s: [o.model_dump() for o in objs] for s, objs in objects.items()}))
    res = CliRunner().invoke(app, ["eval", "--task", "all", "--pred", str(tmp_path / "preds.jsonl"),
                                   "--records", str(tmp_path / "records.jsonl"), "--json", str(tmp_path / "out.json"),
                                   "--boxes", str(tmp_path / "objects.json")])
    assert res.exit_code == 0, res.output
    assert "toy/caption" in res.output and "CIDEr" in res.output and "toy/grounding" in res.output
    out = json.loads((tmp_path / "out.json").read_text())
    by_name = {r["name"]: r for r in out["results"]}
    assert by_name["toy/caption"]["metrics"]["BLEU-4"] == pytest.approx(100.0, abs=1e-3)
    assert len(by_name["toy/counting"]["per_sample"]) == sum(r.task == "counting" for r in records)
