"""Conventions that must agree with the benchmarks' own code (issue 16): ScanRefer's unique/multiple
split through ScanNet's label map, Scan2Cap's m@kIoU (official and Chat-Scene's), duplicate record ids.

Expected numbers come from hand computation or from pycocoevalcap's scorers called here directly on
the strings the official script would build, never from p3d's own caption code.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from pipeline.eval.convert import CONVERTERS
from pipeline.eval.convert.referring import read_label_map
from pipeline.eval.evaluate import evaluate
from pipeline.eval.predictions import Prediction
from schemas.errors import SchemaError
from schemas.manifest import Box3D
from schemas.record import Record, load_records

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")

# ------------------------------------------------------------------ duplicate record ids


def test_duplicate_record_ids_name_the_file_and_both_lines(tmp_path):
    rec = {"id": "q1", "scene_id": "s", "task": "qa", "source": "scanqa", "question": "?", "answers": ["a"]}
    other = {**rec, "id": "q2"}
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (rec, other, {**rec, "answers": ["b"]})) + "\n")
    with pytest.raises(SchemaError, match=r"records\.jsonl:3: duplicate record id 'q1' \(first on line 1\)"):
        load_records(path)


# ------------------------------------------------------------------ ScanRefer unique / multiple

# The real file's header and column order (ScanNet's scannetv2-labels.combined.tsv); rows abridged.
TSV_HEADER = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\teigen13class\t"
              "ModelNet40\tModelNet10\tShapeNetCore55\tsynsetoffset\twnsynsetid\twnsynsetkey\tmpcat40\tmpcat40index")
TSV_ROWS = [  # id, raw_category, category, nyu40id, nyu40class
    (1, "chair", "chair", 5, "chair"),
    (3, "cabinet", "cabinet", 3, "cabinet"),
    (7, "kitchen cabinets", "kitchen cabinet", 3, "cabinet"),
    (21, "office chair", "office chair", 5, "chair"),
    (26, "trash can", "trash can", 39, "otherprop"),
    (26, "box", "box", 29, "box"),
    (40, "refrigerator", "refrigerator", 24, "refridgerator"),  # NYU40's spelling
]


def write_tsv(path):
    lines = [TSV_HEADER] + [f"{i}\t{raw}\t{cat}\t10\t{nyu}\t0\t{cls}\t{cls}\t{cls}\t\t\t\t\t\t\t\t"
                            for i, raw, cat, nyu, cls in TSV_ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


# scene, object_id, object_name, ann_ids
SCANREFER = [("scene0000_00", 1, "kitchen_cabinets", (0,)), ("scene0000_00", 2, "cabinet", (0, 1)),
             ("scene0000_00", 3, "chair", (0, 1, 2)), ("scene0000_00", 4, "trash_can", (0,)),
             ("scene0000_00", 5, "box", (0,)),
             ("scene0001_00", 1, "refrigerator", (0,)), ("scene0001_00", 2, "kitchen_cabinets", (0,)),
             ("scene0001_00", 3, "chair", (0,)), ("scene0001_00", 4, "office_chair", (0,))]
# By hand: scene0000_00 has cabinet x2 (kitchen cabinets + cabinet), chair x1, others x2 (trash can:
# otherprop, box: not one of the 17 classes); scene0001_00 has others x1 (refridgerator), cabinet x1,
# chair x2 (chair + office chair).
OFFICIAL = {("scene0000_00", 1): False, ("scene0000_00", 2): False, ("scene0000_00", 3): True,
            ("scene0000_00", 4): False, ("scene0000_00", 5): False,
            ("scene0001_00", 1): True, ("scene0001_00", 2): True, ("scene0001_00", 3): False,
            ("scene0001_00", 4): False}
# Raw names: every name is alone in its scene.
RAW = {key: True for key in OFFICIAL}


@pytest.fixture
def scanrefer_file(tmp_path):
    entries = [{"scene_id": s, "object_id": str(o), "object_name": n, "ann_id": str(a),
                "description": f"the {n} number {o}.", "token": ["the", n, "number", str(o), "."]}
               for s, o, n, anns in SCANREFER for a in anns]
    path = tmp_path / "ScanRefer_filtered_val.json"
    path.write_text(json.dumps(entries))
    return path


def flags(records) -> dict:
    out = {}
    for r in records:
        key = (r.scene_id, r.target_ids[0])
        assert out.setdefault(key, r.unique) == r.unique  # every description of an object agrees
    return out


def test_label_map_reads_the_real_columns_and_groups_to_the_benchmark_classes(tmp_path):
    label_map = read_label_map(write_tsv(tmp_path / "scannetv2-labels.combined.tsv"))
    assert label_map == {"chair": "chair", "cabinet": "cabinet", "kitchen cabinets": "cabinet",
                         "office chair": "chair", "trash can": "others", "box": "others",
                         "refrigerator": "others"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\traw_category\tcategory\n1\tchair\tchair\n")
    with pytest.raises(ValueError, match="bad.tsv: not scannetv2-labels.combined.tsv: no column nyu40class"):
        read_label_map(bad)


def test_scanrefer_unique_is_the_official_split_with_the_label_map(tmp_path, scanrefer_file):
    label_map = read_label_map(write_tsv(tmp_path / "labels.tsv"))
    res = CONVERTERS["scanrefer"]([scanrefer_file], None, label_map=label_map)
    assert not res.problems and len(res.records) == 12
    assert flags(res.records) == OFFICIAL
    assert {r.meta["unique_from"] for r in res.records} == {"label_map"}
    assert not any("label-map" in n for n in res.notes)

    plain = CONVERTERS["scanrefer"]([scanrefer_file], None)
    assert flags(plain.records) == RAW  # kitchen_cabinets and cabinet counted as two classes
    assert {r.meta["unique_from"] for r in plain.records} == {"raw_names"}
    assert any("NOT ScanRefer's official split" in n and "raw object names" in n for n in plain.notes)


def test_scanrefer_unknown_names_count_as_others_and_are_named(tmp_path, scanrefer_file):
    label_map = read_label_map(write_tsv(tmp_path / "labels.tsv"))
    del label_map["box"]
    res = CONVERTERS["scanrefer"]([scanrefer_file], None, label_map=label_map)
    assert flags(res.records) == OFFICIAL
    assert any("absent from the label map" in n and "box" in n for n in res.notes)


def test_cli_convert_scanrefer_label_map_and_its_warning(tmp_path, scanrefer_file):
    from p3d.cli import app

    tsv = write_tsv(tmp_path / "labels.tsv")
    out = tmp_path / "scanrefer.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "scanrefer", str(scanrefer_file), "--out", str(out), "--label-map", str(tsv)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
    assert flags(load_records(out)) == OFFICIAL

    res = runner.invoke(app, ["convert", "scanrefer", str(scanrefer_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "warning: no --label-map" in res.stderr and "NOT ScanRefer's official split" in res.stdout
    assert flags(load_records(out)) == RAW

    res = runner.invoke(app, ["convert", "multi3drefer", str(scanrefer_file), "--out", str(out), "--label-map", str(tsv)])
    assert res.exit_code != 0 and "only scanrefer uses it" in res.output


# ------------------------------------------------------------------ Scan2Cap m@kIoU

TARGET = Box3D(center=[1, 1, 1], size=[2, 2, 2])  # [0, 2]^3, volume 8
HALF = Box3D(center=[1, 1, 0.5], size=[2, 2, 1])  # inside the target, volume 4: IoU exactly 0.5
QUARTER = Box3D(center=[1, 1, 0.25], size=[2, 2, 0.5])  # volume 2: IoU exactly 0.25
FAR = Box3D(center=[9, 9, 9], size=[2, 2, 2])  # IoU 0

LONG = ("this is a tall brown wooden chair with four legs and a high back , it stands at the end of the "
        "long table next to the window in the corner of the room .").split()
CAPTIONS = [LONG, "a white table in the middle of the room .".split(),
            "a black lamp standing on the desk .".split(), "a long grey sofa under the window .".split(),
            "the small trash can by the door .".split()]
BOXES = [TARGET, HALF, QUARTER, FAR, None]  # the last one gets no prediction at all


def caption_case():
    recs = [Record(id=f"cap{i}", scene_id="s", task="caption", source="scan2cap", question="Describe <OBJ> in detail.",
                   answers=[" ".join(t)], target_ids=[i], target_boxes=[TARGET], meta={"tokens": [t]})
            for i, t in enumerate(CAPTIONS)]
    # Each prediction is its reference word for word (capitalized, punctuation attached).
    preds = {r.id: Prediction(id=r.id, scene_id="s", task="caption", boxes=[b],
                              text=" ".join(CAPTIONS[i]).replace(" ,", ",").replace(" .", ".").capitalize())
             for i, (r, b) in enumerate(zip(recs, BOXES)) if b is not None}
    return recs, preds


def reference_scores(hits: list[bool], ptb: bool) -> dict[str, float]:
    """Scan2Cap's eval written out: references "sos <first 30 tokens> eos", a hit's candidate
    "sos <tokens> eos", a miss "sos eos"; corpus scores from pycocoevalcap directly."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = {str(i): ["sos " + " ".join(t[:30]) + " eos"] for i, t in enumerate(CAPTIONS)}
    cands = {str(i): ["sos " + " ".join(t) + " eos" if hit else "sos eos"] for i, (t, hit) in enumerate(zip(CAPTIONS, hits))}
    if ptb:  # Chat-Scene: both sides through the COCO PTB tokenizer
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        refs = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
        cands = tok.tokenize({k: [{"caption": c} for c in v] for k, v in cands.items()})
    bleu, _ = Bleu(4).compute_score(refs, cands)
    return {"BLEU-4": 100 * bleu[3], "CIDEr": 100 * Cider().compute_score(refs, cands)[0],
            "ROUGE-L": 100 * Rouge().compute_score(refs, cands)[0]}


@needs_java
def test_scan2cap_official_convention_is_iou_above_k_with_sos_eos_corpus_scores():
    recs, preds = caption_case()
    [res] = evaluate(recs, preds, "scan2cap")  # the default is the official convention
    assert [s["iou"] for s in res.per_sample] == [1.0, 0.5, 0.25, 0.0, 0.0]
    assert res.num_missing == 1
    # IoU 0.5 is no hit at 0.5, IoU 0.25 none at 0.25 (the official script compares IoU > k).
    for k, hits in ((0.5, [True, False, False, False, False]), (0.25, [True, True, False, False, False])):
        expected = reference_scores(hits, ptb=False)
        for metric, value in expected.items():
            assert res.metrics[f"{metric}@{k}"] == pytest.approx(value), (metric, k)
    # The plain scores: every prediction counts wherever its box is.
    for metric, value in reference_scores([True, True, True, True, False], ptb=False).items():
        assert res.metrics[metric] == pytest.approx(value), metric
    assert any("IoU > k" in n for n in res.notes)


@needs_java
def test_scan2cap_chatscene_convention_counts_iou_equal_to_k():
    recs, preds = caption_case()
    [res] = evaluate(recs, preds, "scan2cap", caption_convention="chatscene")
    for k, hits in ((0.5, [True, True, False, False, False]), (0.25, [True, True, True, False, False])):
        for metric, value in reference_scores(hits, ptb=True).items():
            assert res.metrics[f"{metric}@{k}"] == pytest.approx(value), (metric, k)
    official = evaluate(recs, preds, "scan2cap")[0]
    assert res.metrics["CIDEr@0.5"] > official.metrics["CIDEr@0.5"]  # the IoU = 0.5 caption counts here


@needs_java
def test_scan2cap_a_miss_is_the_sos_eos_caption_not_zero():
    """One object, no prediction: candidate "sos eos" against "sos a red chair eos". By hand,
    ROUGE-L (beta 1.2): LCS 2, precision 2/2, recall 2/5, F = 2.44 * 0.4 / (0.4 + 1.44)."""
    rec = Record(id="c", scene_id="s", task="caption", source="scan2cap", question="Describe <OBJ>.",
                 answers=["a red chair"], target_ids=[0], target_boxes=[TARGET], meta={"tokens": [["a", "red", "chair"]]})
    pred = Prediction(id="c", scene_id="s", task="caption", text="", not_asked="no segment")
    [res] = evaluate([rec], {"c": pred}, "scan2cap")
    assert res.metrics["ROUGE-L@0.5"] == pytest.approx(100 * 2.44 * 0.4 / 1.84)


def test_unknown_caption_convention_is_refused():
    recs, preds = caption_case()
    with pytest.raises(ValueError, match="unknown caption convention 'leo'; known: scan2cap, chatscene"):
        evaluate(recs, preds, "scan2cap", caption_convention="leo")


def test_scan2cap_records_keep_scanrefer_tokens(scanrefer_file):
    res = CONVERTERS["scan2cap"]([scanrefer_file], None)
    rec = next(r for r in res.records if r.target_ids == [3] and r.scene_id == "scene0000_00")
    assert rec.meta["tokens"] == [["the", "chair", "number", "3", "."]] * 3

