"""Issue 16: the published QA conventions, SQA3D question types, VSI-Bench's direction merge,
converters that never destroy good output, and `p3d eval`'s exit codes and clean stdout.

Expected numbers are worked out by hand in the comments, never by calling the function under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from p3d.cli import app
from pipeline.eval.convert import CONVERTERS
from pipeline.eval.convert.scannet_qa import sqa3d_question_type
from pipeline.eval.metrics import eval_sqa3d, eval_vsibench
from pipeline.eval.predictions import Prediction, load_scene_objects
from pipeline.eval.text import qa_match
from schemas.record import Record

FIX = Path(__file__).parent / "fixtures" / "datasets"


def P(rec: Record, text: str) -> Prediction:
    return Prediction(id=rec.id, scene_id=rec.scene_id, task=rec.task, text=text)


# ------------------------------------------------------------------ ScanQA / SQA3D EM conventions

# (prediction, references) -> (EM, EM-R) per convention, each worked out from the scorers' rules:
#  scanqa: clean both sides; EM if the answer is among the answers, EM-R if any reference (spaces
#          removed) contains it or is contained in it.
#  leo:    clean both sides; walk references in order, stop at the first exact or substring match.
#  chatscene: clean the prediction only; compare with the raw references.
CASES = [
    # the exact reference comes second: LEO stops at "brown chair" (substring) -> EM 0
    ("brown", ["brown chair", "brown"], {"scanqa": (1, 1), "leo": (0, 1), "chatscene": (1, 1)}),
    # digits: cleaning turns "2" into "two" on both sides, but Chat-Scene's raw reference stays "2"
    ("Two.", ["2"], {"scanqa": (1, 1), "leo": (1, 1), "chatscene": (0, 0)}),
    # article and capitals: cleaned "brown chair" equals the cleaned reference; against the raw
    # "The brown chair" only the substring test holds ("brownchair" in "Thebrownchair")
    ("the Brown chair", ["The brown chair"], {"scanqa": (1, 1), "leo": (1, 1), "chatscene": (0, 1)}),
    # no relation at all
    ("table", ["brown chair", "sofa"], {"scanqa": (0, 0), "leo": (0, 0), "chatscene": (0, 0)}),
    # an empty answer matches nothing in any convention ("" is a substring of everything)
    ("", ["brown"], {"scanqa": (0, 0), "leo": (0, 0), "chatscene": (0, 0)}),
]


@pytest.mark.parametrize("convention", ["scanqa", "leo", "chatscene"])
def test_qa_conventions_where_they_differ(convention):
    for pred, refs, expected in CASES:
        assert qa_match(pred, refs, convention) == expected[convention], (pred, refs)


def test_qa_convention_unknown_is_refused():
    with pytest.raises(ValueError, match="scanqa, leo, chatscene"):
        qa_match("a", ["a"], "vqa")


@pytest.mark.parametrize("convention,em,em_r", [
    # the first four CASES as SQA3D records: EM hits per convention / 4 and EM-R hits / 4
    ("scanqa", 3 / 4, 3 / 4), ("leo", 2 / 4, 3 / 4), ("chatscene", 1 / 4, 2 / 4),
])
def test_sqa3d_scores_follow_the_convention(convention, em, em_r):
    recs = [Record(id=f"q{i}", scene_id="s", task="situated_qa", source="sqa3d", question="What is it?",
                   answers=refs, question_type="what") for i, (_, refs, _) in enumerate(CASES[:4])]
    res = eval_sqa3d([(r, P(r, pred)) for r, (pred, _, _) in zip(recs, CASES)], convention=convention)
    assert res.metrics["EM"] == pytest.approx(100 * em)
    assert res.metrics["EM-R"] == pytest.approx(100 * em_r)
    assert any(convention in n for n in res.notes)


# ------------------------------------------------------------------ SQA3D question types


@pytest.mark.parametrize("question,qtype", [
    ("What's on my left?", "what"), ("what's behind me", "what"), ("What\u2019s in front?", "what"),
    ("Is the door open?", "is"), ("How, exactly, do I turn?", "how"), ("Can I sit here?", "can"),
    ("Which way is the sink?", "which"), ("Where is the bed?", "others"), ("Isn't it dark?", "others"),
    ("  What color is the chair?", "what"),
])
def test_sqa3d_question_type_as_the_official_loader_tokenizes(question, qtype):
    assert sqa3d_question_type(question) == qtype


# ------------------------------------------------------------------ VSI-Bench relative direction


def _vsi(i: int, qtype: str, answer: str, choices: list[str] | None = None) -> Record:
    return Record(id=f"v{i}", scene_id="s", task="relative_direction" if choices else "counting",
                  source="vsibench", question="?", answers=[answer], choices=choices,
                  answer_type="choice" if choices else "number", question_type=qtype)


def test_vsibench_direction_levels_merge_as_the_official_aggregate():
    opts = ["A. left", "B. right"]
    easy1, easy2 = _vsi(0, "object_rel_direction_easy", "A", opts), _vsi(1, "object_rel_direction_easy", "A", opts)
    hard = _vsi(2, "object_rel_direction_hard", "B", opts)
    count = _vsi(3, "object_counting", "4")
    pairs = [(easy1, P(easy1, "A")), (easy2, P(easy2, "B.")), (hard, P(hard, "B")), (count, P(count, "4"))]
    res = eval_vsibench(pairs)
    # easy 1/2 = 50, medium absent = 0, hard 1/1 = 100: (50 + 0 + 100) / 3 = 50
    assert res.metrics["object_rel_direction"] == pytest.approx(50.0)
    assert "object_rel_direction_easy" not in res.metrics
    # counting MRA: |4-4|/4 = 0 <= 1 - t for every t -> 100; overall = (50 + 100) / 2
    assert res.metrics["object_counting"] == pytest.approx(100.0)
    assert res.metrics["overall"] == pytest.approx(75.0)
    assert any("object_rel_direction_medium" in n and "absent" in n for n in res.notes)
    assert not any("object_rel_direction_easy" in n for n in res.notes)


# ------------------------------------------------------------------ converters keep good output


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_wrong_dataset_leaves_existing_out_untouched(tmp_path):
    out = _write(tmp_path / "scanqa.jsonl", "precious\n")
    res = CliRunner().invoke(app, ["convert", "scanqa", str(FIX / "ScanRefer_filtered_val.json"), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "no scanqa record converted; first problem:" in res.output and "missing field 'question'" in res.output
    assert out.read_text() == "precious\n"


def test_strict_with_problems_writes_nothing(tmp_path):
    out = _write(tmp_path / "refer.jsonl", "precious\n")
    res = CliRunner().invoke(app, ["convert", "scanrefer", str(FIX / "ScanRefer_filtered_val.json"), "--out",
                                   str(out), "--strict"])
    assert res.exit_code == 1, res.output
    assert "--strict: 1 entries failed; first: scene0011_00-abc-0" in res.output
    assert out.read_text() == "precious\n"


def test_unreadable_file_is_one_line_and_exit_2(tmp_path):
    bad = _write(tmp_path / "ScanQA_v1.0_val.json", '{"not": "a list"}')
    out = _write(tmp_path / "out.jsonl", "precious\n")
    res = CliRunner().invoke(app, ["convert", "scanqa", str(bad), "--out", str(out)])
    assert res.exit_code == 2
    assert "error: " in res.output and "expected a JSON list" in res.output and "Traceback" not in res.output
    assert out.read_text() == "precious\n"


def test_mmscan_skips_samples_whose_objects_the_scene_lacks(tmp_path):
    objects = load_scene_objects(FIX / "objects.json")  # scene0011_00 has objects 1, 3, 4, 5, 8
    samples = [
        {"ID": "a", "sub_class": "QA_Single_EQ", "scan_id": "scene0011_00", "question": "Is there a chair?",
         "answers": ["Yes."], "object_ids": [1, 3]},
        {"ID": "b", "sub_class": "QA_Single_EQ", "scan_id": "scene0011_00", "question": "Is there a bed?",
         "answers": ["No."], "object_ids": [1, 99]},
        {"ID": "c", "sub_class": "VG_Single_Attribute", "scan_id": "scene0011_00", "text": "the red one",
         "target_id": [42]},
    ]
    path = _write(tmp_path / "MMScan_QA.json", json.dumps({"val": samples}))
    res = CONVERTERS["mmscan"]([path], objects)
    assert [r.id for r in res.records] == ["mmscan-a"]
    assert res.skipped == [("b", "object ids [99] are not annotated in scene scene0011_00"),
                           ("c", "object ids [42] are not annotated in scene scene0011_00")]
    assert res.problems == []
    assert "skipped 2 entries" in res.summary()


def test_sr91k_reads_the_spacer_training_layout(tmp_path):
    rows = [
        {"problem_id": 7, "problem": "How many chairs?", "data_type": "video", "question_type": "object_counting",
         "solution": "<answer>3</answer>", "video": "scannet/scene0011_00.mp4"},
        {"problem_id": 8, "problem": "Which is closer? A. bed B. sofa", "data_type": "video",
         "question_type": "object_rel_distance", "solution": "<answer>B</answer>", "video": "scannet/scene0012_00.mp4"},
    ]
    path = _write(tmp_path / "spacer.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    res = CONVERTERS["sr91k"]([path])
    assert res.problems == []
    assert [(r.id, r.scene_id, r.answer_type, r.answers, r.question_type) for r in res.records] == [
        ("sr91k-7", "scene0011_00", "number", ["3"], "object_counting"),
        ("sr91k-8", "scene0012_00", "text", ["B"], "object_rel_distance"),
    ]


def test_sr91k_names_the_layouts_it_expects(tmp_path):
    path = _write(tmp_path / "other.jsonl", json.dumps({"id": 1, "question": "?"}) + "\n")
    with pytest.raises(ValueError, match="problem_type.*question_type.*video"):
        CONVERTERS["sr91k"]([path])
    out = _write(tmp_path / "out.jsonl", "precious\n")
    res = CliRunner().invoke(app, ["convert", "sr91k", str(path), "--out", str(out)])
    assert res.exit_code == 2 and "not an SR-91K file" in res.output
    assert out.read_text() == "precious\n"


# ------------------------------------------------------------------ p3d eval: exit codes and stdout


def _counting_files(tmp_path: Path, preds: list[dict]) -> tuple[Path, Path]:
    recs = [Record(id=f"c{i}", scene_id="s", task="counting", source="toy", question="How many?",
                   answers=[str(n)], answer_type="number") for i, n in enumerate([2, 4])]
    records = _write(tmp_path / "records.jsonl", "".join(r.model_dump_json() + "\n" for r in recs))
    pred = _write(tmp_path / "preds.jsonl", "".join(json.dumps(p) + "\n" for p in preds))
    return records, pred


def _pred(i: int, text: str) -> dict:
    return {"id": f"c{i}", "scene_id": "s", "task": "counting", "text": text}


def test_eval_missing_predictions_scores_them_wrong_and_exits_3(tmp_path):
    records, pred = _counting_files(tmp_path, [_pred(0, "2")])
    res = CliRunner().invoke(app, ["eval", "--task", "all", "--pred", str(pred), "--records", str(records)])
    assert res.exit_code == 3, res.output
    # c0: 2 vs 2 -> MRA 1, EM 1; c1: missing -> 0, 0. Mean over 2 records: 50.
    row = next(line.split() for line in res.stdout.splitlines() if line.startswith("toy/counting") and " MRA " in line)
    assert row[2] == "50.00" and row[-2:] == ["2", "1"]
    assert "1 records had no prediction" in res.output


def test_eval_not_asked_is_a_scored_miss_not_a_missing_line(tmp_path):
    not_asked = dict(_pred(1, ""), not_asked="objects [3] named by the question match no segment")
    records, pred = _counting_files(tmp_path, [_pred(0, "2"), not_asked])
    res = CliRunner().invoke(app, ["eval", "--task", "all", "--pred", str(pred), "--records", str(records)])
    assert res.exit_code == 0, res.output
    # c0 right, c1 a miss: MRA and EM 50 over the 2 records, as with a missing line.
    row = next(line.split() for line in res.stdout.splitlines() if line.startswith("toy/counting") and " MRA " in line)
    assert row[2] == "50.00"
    assert "not asked" in res.output and "had no prediction" not in res.output


def test_eval_all_answered_exits_0(tmp_path):
    records, pred = _counting_files(tmp_path, [_pred(0, "2"), _pred(1, "5")])
    res = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--records", str(records)])
    assert res.exit_code == 0, res.output
    # c1: |5-4|/4 = 0.25 <= 1 - t for t in 0.50..0.75 (6 of 10) -> 0.6; MRA = (1 + 0.6) / 2 = 80
    row = next(line.split() for line in res.stdout.splitlines() if " MRA " in line)
    assert row[2] == "80.00"


@pytest.mark.parametrize("preds,message", [
    ([_pred(0, "2"), _pred(0, "3")], "duplicate prediction for record id 'c0'"),
    ([], "no predictions in this file"),
])
def test_eval_invalid_predictions_exit_2_in_one_line(tmp_path, preds, message):
    records, pred = _counting_files(tmp_path, preds)
    res = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--records", str(records)])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == \
        [line for line in res.output.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")
def test_eval_stdout_is_only_the_table(tmp_path):
    rec = Record(id="q0", scene_id="s", task="qa", source="scanqa", question="What color?", answers=["brown"])
    records = _write(tmp_path / "records.jsonl", rec.model_dump_json() + "\n")
    pred = _write(tmp_path / "preds.jsonl", json.dumps({"id": "q0", "scene_id": "s", "task": "qa",
                                                         "text": "Brown."}) + "\n")
    res = CliRunner().invoke(app, ["eval", "--pred", str(pred), "--records", str(records), "--qa-convention", "leo"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["group", "metric"]
    assert all(line.startswith(("scanqa/qa", "note (", "-")) for line in lines[2:]), lines
    assert "testlen" not in res.stdout and "{" not in res.stdout
    assert "note (scanqa/qa): EM@1 / EM-R convention: leo" in res.stdout
