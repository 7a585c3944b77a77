"""Converters on small fixtures written in each dataset's published format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.eval.convert import CONVERTERS
from pipeline.eval.predictions import load_scene_objects
from schemas.record import Record, load_records, write_records

FIX = Path(__file__).parent / "fixtures" / "datasets"


@pytest.fixture(scope="module")
def objects():
    return load_scene_objects(FIX / "objects.json")


def _roundtrip(records: list[Record], tmp_path: Path) -> list[Record]:
    path = tmp_path / "r.jsonl"
    write_records(records, path)
    return load_records(path)


def test_scanqa(tmp_path, objects):
    res = CONVERTERS["scanqa"]([FIX / "ScanQA_v1.0_val.json"], objects)
    assert [r.id for r in res.records] == ["scanqa-val-scene0011-0", "scanqa-val-scene0011-1", "scanqa-val-scene0011-2"]
    assert [pid for pid, _ in res.problems] == ["val-scene0011-3"]
    assert "question" in res.problems[0][1]
    r = res.records[1]
    assert (r.task, r.source, r.split, r.answers, r.target_ids) == ("qa", "scanqa", "val", ["2", "two"], [3, 4])
    assert [b.center for b in r.target_boxes] == [[1.0, 1.0, 0.5], [2.0, 1.0, 0.5]]
    assert _roundtrip(res.records, tmp_path) == res.records
    no_boxes = CONVERTERS["scanqa"]([FIX / "ScanQA_v1.0_val.json"], None)
    assert all(not r.target_boxes for r in no_boxes.records) and no_boxes.notes


def test_sqa3d_pairs_questions_and_annotations(tmp_path):
    files = [FIX / "v1_balanced_sqa_annotations_val_scannetv2.json", FIX / "v1_balanced_questions_val_scannetv2.json"]
    res = CONVERTERS["sqa3d"](files)
    assert len(res.records) == 3
    assert res.problems == [("220602000003", "no annotation with this question_id")]
    by_id = {r.id: r for r in res.records}
    r = by_id["sqa3d-220602000000"]
    assert r.situation == "I am sitting on the chair facing the desk." and r.answers == ["desk"]
    assert [by_id[f"sqa3d-22060200000{i}"].question_type for i in range(3)] == ["what", "is", "which"]
    assert _roundtrip(res.records, tmp_path) == res.records


def test_scanrefer_unique_and_boxes(objects):
    res = CONVERTERS["scanrefer"]([FIX / "ScanRefer_filtered_val.json"], objects)
    assert len(res.records) == 4 and len(res.problems) == 1
    assert res.problems[0][0] == "scene0011_00-abc-0"
    unique = {r.id: r.unique for r in res.records}
    assert unique == {"scanrefer-scene0011_00-3-0": False, "scanrefer-scene0011_00-3-1": False,
                      "scanrefer-scene0011_00-4-0": False, "scanrefer-scene0011_00-5-0": True}
    assert res.records[3].target_boxes[0].size == [1.5, 0.8, 0.8]
    # Without the boxes file, classes come from the ScanRefer names themselves: same split here.
    plain = CONVERTERS["scanrefer"]([FIX / "ScanRefer_filtered_val.json"], None)
    assert {r.id: r.unique for r in plain.records} == unique
    assert all(not r.target_boxes for r in plain.records)


def test_scan2cap_groups_descriptions_per_object(objects):
    res = CONVERTERS["scan2cap"]([FIX / "ScanRefer_filtered_val.json"], objects)
    by_id = {r.id: r for r in res.records}
    assert set(by_id) == {"scan2cap-scene0011_00-3", "scan2cap-scene0011_00-4", "scan2cap-scene0011_00-5"}
    assert len(by_id["scan2cap-scene0011_00-3"].answers) == 2
    assert by_id["scan2cap-scene0011_00-3"].task == "caption"
    assert [pid for pid, _ in res.problems] == ["scene0011_00-abc"]
    # The prompt names its object: the one placeholder stands for the one target, the described object.
    for rec in res.records:
        obj = int(rec.id.rsplit("-", 1)[1])
        assert rec.question == "Describe <OBJ> in detail." and rec.target_ids == [obj]
        [gt] = [o for o in objects["scene0011_00"] if o.id == obj]
        assert rec.target_boxes == [gt.box]


def test_multi3drefer(objects):
    res = CONVERTERS["multi3drefer"]([FIX / "multi3drefer_val.json"], objects)
    assert [r.question_type for r in res.records] == ["mt", "st_w_d", "zt_wo_d"]
    zero = res.records[2]
    assert zero.target_ids == [] and zero.target_boxes == []
    assert len(res.records[0].target_boxes) == 2
    assert len(res.problems) == 1 and "disagrees" in res.problems[0][1]


def test_mmscan_qa_and_vg():
    res = CONVERTERS["mmscan"]([FIX / "MMScan_QA.json", FIX / "MMScan_VG.json"], None)
    tasks = {r.id: (r.task, r.split, r.question_type) for r in res.records}
    assert tasks == {
        "mmscan-QA_Single_EQ__1mp3d_0000_region1__1": ("qa", "val", "QA_Single_EQ"),
        "mmscan-QA_Inter_OR__1mp3d_0000_region1__2": ("qa", "val", "QA_Inter_OR"),
        "mmscan-VG_Single_Attribute_Common__1mp3d_0000_region2__1": ("multi_grounding", "val", "VG_Single_Attribute_Common"),
    }
    assert [pid for pid, _ in res.problems] == ["QA_Single_EQ__1mp3d_0000_region1__3"]


def test_sr91k_reports_bad_lines():
    res = CONVERTERS["sr91k"]([FIX / "SR-91k.jsonl"])
    assert [(r.scene_id, r.answer_type, r.answers) for r in res.records] == [
        ("scene0011_00", "number", ["4"]), ("scene0011_00", "choice", ["B"])]
    assert sorted(pid for pid, _ in res.problems) == ["2", "SR-91k.jsonl:4"]


def test_vsibench_maps_question_types():
    res = CONVERTERS["vsibench"]([FIX / "vsibench_test.jsonl"])
    got = {r.question_type: (r.task, r.answer_type) for r in res.records}
    assert got == {
        "object_counting": ("counting", "number"), "object_abs_distance": ("distance", "number"),
        "object_rel_direction_easy": ("relative_direction", "choice"),
        "object_rel_direction_hard": ("relative_direction", "choice"),
        "route_planning": ("route_plan", "choice"),
    }
    assert res.problems == [("6", "unknown question_type 'object_teleportation'")]


def test_vsibench_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    rows = [{"id": 1, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "room_size_estimation",
             "question": "What is the size of this room?", "options": None, "ground_truth": "21.5"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "test.parquet")
    res = CONVERTERS["vsibench"]([tmp_path / "test.parquet"])
    assert res.records[0].task == "room_size" and res.records[0].answers == ["21.5"]


def test_cli_convert_and_stats(tmp_path):
    from p3d.cli import app

    runner = CliRunner()
    out = tmp_path / "records.jsonl"
    res = runner.invoke(app, ["convert", "scanrefer", str(FIX / "ScanRefer_filtered_val.json"), "--out", str(out),
                              "--boxes", str(FIX / "objects.json")])
    assert res.exit_code == 0, res.output
    assert "4 records, 1 problems" in res.output and "scene0011_00-abc-0" in res.output
    assert len(load_records(out)) == 4
    strict = runner.invoke(app, ["convert", "scanrefer", str(FIX / "ScanRefer_filtered_val.json"), "--out",
                                 str(tmp_path / "x.jsonl"), "--strict"])
    assert strict.exit_code == 1
    stats = runner.invoke(app, ["dataset", "stats", str(out)])
    assert stats.exit_code == 0, stats.output
    assert "scanrefer" in stats.output and "grounding" in stats.output and "4" in stats.output


# ------------------------------------------------------------------ MMScan's object-object slice
def _mmscan_qa(sub_class: str, scan_id: str, n: int, question: str, answers: list[str], object_ids: list[int],
               names: list[str], shown: list[int] | None) -> dict:
    """One sample as MMScan_samples/MMScan_QA.json holds it (fields of the devkit's mmscan/mmscan.py;
    ID `<sub_class>__<scan_id>__<n>`; input boxes 9-DoF, one per shown object)."""
    boxes = [[1.0 * i, 0.5, 0.4, 0.6, 0.5, 0.8, 0.0, 0.0, 0.0] for i in shown] if shown else None
    return {"sub_class": sub_class, "scan_id": scan_id, "question": question, "answers": answers,
            "object_ids": object_ids, "object_names": names, "input_bboxes_id": shown, "input_bboxes": boxes,
            "output_bboxes_id": None, "output_bboxes": None, "ID": f"{sub_class}__{scan_id}__{n}"}


def _mmscan_mixed(path: Path) -> Path:
    """Every QA sub-class MMScan's generation writes, two of them object-object (scenes of
    tests/synthetic_shards.py: instance ids 1..3 exist in each)."""
    train = [
        _mmscan_qa("QA_Single_EQ", "scene0000", 0, "Look carefully at the room, is there a lamp in the room? ",
                   ["Yes, there is. "], [1], ["lamp"], None),
        _mmscan_qa("QA_Single_Attribute", "scene0000", 1, "Examine the object closely,  what is the color of it? ",
                   ["Its color is red. "], [2], ["chair"], [2]),
        _mmscan_qa("QA_Single_Space", "scene0001", 2, "Examine the object closely,  what is the shape of it? ",
                   ["Its shape is round. "], [1], ["table"], [1]),
        _mmscan_qa("QA_Inter_OR", "scene0001", 3, "What is the special role of it in the kitchen? ",
                   ["Cooking."], [3], ["stove"], [3]),
        _mmscan_qa("QA_Inter_Space_OO", "scene0000", 4, "Is the lamp higher than the table? ", ["Yes. "], [3, 1],
                   ["lamp", "table"], [3, 1]),
        _mmscan_qa("QA_Inter_Attribute_OO", "scene0001", 5, "Carefully compare these two objects, are they similar "
                   "in color? Given me the answer and reason. ", ["No, one is red and one is blue."], [2, 1],
                   ["chair", "sofa"], [2, 1]),
        _mmscan_qa("QA_Inter_Attribute_OO", "scene0001", 6, "Is the sofa bigger than the chair? ", ["Yes. "], [1, 2],
                   ["sofa", "chair"], [1, 2]),
    ]
    val = [_mmscan_qa("QA_Inter_Space_OO", "scene0002", 7, "Is the lamp higher than the bed? ", ["No. "], [1, 2],
                      ["lamp", "bed"], [1, 2]),
           _mmscan_qa("QA_Single_EQ", "scene0002", 8, "How many beds are there in the room? ", ["One."], [2], ["bed"],
                      None)]
    path.write_text(json.dumps({"train": train, "val": val, "test": []}))
    return path


OO_IDS = ["mmscan-QA_Inter_Space_OO__scene0000__4", "mmscan-QA_Inter_Attribute_OO__scene0001__5",
          "mmscan-QA_Inter_Attribute_OO__scene0001__6", "mmscan-QA_Inter_Space_OO__scene0002__7"]


def test_mmscan_object_object_slice_is_exactly_the_oo_sub_classes_written_atomically(tmp_path):
    from p3d.cli import app

    src = _mmscan_mixed(tmp_path / "MMScan_QA.json")
    out = tmp_path / "mmscan_oo.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "mmscan", str(src), "--slice", "object-object", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = load_records(out)
    assert [r.id for r in recs] == OO_IDS
    assert {r.question_type for r in recs} == {"QA_Inter_Space_OO", "QA_Inter_Attribute_OO"}
    assert "left out 5 samples" in res.output
    # The objects MMScan shows as input boxes are named by placeholder, in order, and lead the targets.
    compare = recs[1]
    assert compare.question.startswith("The objects: <OBJ>, <OBJ>. Carefully compare these two objects")
    assert compare.target_ids == [2, 1] and compare.split == "train" and recs[3].split == "val"
    # A slice that selects nothing writes nothing: the previous file stays as it was, no temp left.
    before = out.read_bytes()
    none = runner.invoke(app, ["convert", "mmscan", str(src), "--slice", "VG_Inter_Space_OO", "--out", str(out)])
    assert none.exit_code == 2 and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MMScan_QA.json", "mmscan_oo.jsonl"]
    bad = runner.invoke(app, ["convert", "mmscan", str(src), "--slice", "object object", "--out", str(out)])
    assert bad.exit_code == 2 and "--slice" in bad.output and out.read_bytes() == before
    # Without --slice every sub-class converts.
    assert len(CONVERTERS["mmscan"]([src], None).records) == 9


def test_scannet_stage3_reads_the_object_object_records(tmp_path):
    """A scannet-like workflow (the shipped scannet.yaml's train section, pointed at synthetic shards)
    trains stage 3 on exactly the O-O records, their objects named by identifier, and on no synthetic
    template."""
    import yaml

    from schemas.workflow import load_workflow
    from trainer.recipes import stage_config
    from tests.synthetic_shards import write_synthetic
    from trainer.train import records_path, resolve_train_config, stage_stream, training_records

    shards, _ = write_synthetic(tmp_path / "data", num_scenes=3, dim=16)
    oo = CONVERTERS["mmscan"]([_mmscan_mixed(tmp_path / "MMScan_QA.json")], None, slice_name="object-object")
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflows" / "scannet.yaml").read_text())
    [stage3] = [s for s in shipped["train"]["stages"] if s["stage"] == 3]
    assert stage3["records"] == "data/scannet/mmscan_oo.jsonl" and stage3["record_tasks"] == ["qa"]
    assert all("identifiers" not in s["trainable"] for s in shipped["train"]["stages"])  # frozen, as the paper
    write_records(oo.records, tmp_path / stage3["records"])
    train = dict(shipped["train"], proxies="synthetic", records=str(tmp_path / "data" / "records.jsonl"),
                 out=str(tmp_path / "run"))
    train["stages"] = [dict(s, records=str(tmp_path / s["records"])) if s["stage"] == 3 else s
                       for s in train["stages"]]
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(dict(shipped, out=str(tmp_path / "data"), train=train)))
    wf = load_workflow(tmp_path / "wf.yaml")
    cfg = resolve_train_config(wf, None)
    scfg = stage_config(cfg, 3)
    by_scene, held_out = training_records(records_path(wf, cfg, scfg), required=True)
    assert held_out == {"scene0002"}  # its only O-O record is a val record
    items = list(stage_stream(cfg, scfg, shards, by_scene, held_out).items(0))
    assert sorted(ex.record_id for ex, _ in items) == sorted(OO_IDS[:3])
    asked = {ex.record_id: ex for ex, _ in items}
    compare = asked["mmscan-QA_Inter_Attribute_OO__scene0001__5"]
    assert re.match(r"The objects: <OBJ\d{3}>, <OBJ\d{3}>\. Carefully compare", compare.question)
    assert compare.answer == "No, one is red and one is blue." and {ex.task for ex, _ in items} == {"qa"}
