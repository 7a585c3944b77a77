import json

import pytest

from schemas import SCHEMAS, Record, SchemaError, load_records, load_workflow, write_records


def test_every_schema_exports_json_schema():
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        assert schema["type"] == "object", name
        assert schema["properties"], name


def test_record_roundtrip(tmp_path):
    recs = [
        Record(id="a", scene_id="s0", task="qa", source="toy", question="q?", answers=["x"]),
        Record(id="b", scene_id="s0", task="grounding", source="toy", question="the chair",
               target_ids=[3], target_boxes=[{"center": [0, 0, 0], "size": [1, 1, 1]}]),
    ]
    path = tmp_path / "r.jsonl"
    assert write_records(recs, path) == 2
    assert load_records(path) == recs


def test_invalid_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "r.jsonl"
    good = {"id": "a", "scene_id": "s", "task": "qa", "source": "toy", "question": "q"}
    bad = dict(good, target_ids=["not-an-int"])
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SchemaError, match=r"r\.jsonl:2: field 'target_ids\.0'"):
        load_records(path)


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        Record(id="a", scene_id="s", task="dance", source="toy", question="q")


def test_invalid_workflow_names_line_and_field(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("name: x\nout: data\nsource:\n  kind: toy\n  path: p\ncluster:\n  proxies: -3\n")
    with pytest.raises(SchemaError, match=r"w\.yaml:7: field 'cluster\.proxies'"):
        load_workflow(path)


def test_shipped_workflows_validate():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "workflows").glob("*.yaml"))
    assert files
    for f in files:
        wf = load_workflow(f)
        assert wf.name
