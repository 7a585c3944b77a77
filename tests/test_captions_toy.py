"""Scan2Cap end to end on the toy world: the toy annotator's caption records, proxy shards whose
segments carry their matching to the toy objects (scrambled mask labels, one object unmatched), a
tiny untrained checkpoint loaded through `p3d predict`, then `p3d eval --task caption`.

The checkpoint's captions are noise; what is checked is the plumbing: which segment a caption is
asked about, the box it carries, and how eval scores hits, box misses and records not asked."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cluster.shards import json_bytes, npy_bytes, write_shard
from pipeline.eval.predictions import load_predictions, write_predictions
from schemas.proxy import INDEX_FILE, SHARD_PATTERN, ProxyMeta, SegmentInfo, index_payload
from schemas.record import load_records, write_records

toy_layout = pytest.importorskip("pipeline.toy.layout")
toy_annotate = pytest.importorskip("pipeline.toy.annotate")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")

NUM_OBJ_TOKENS = 16  # >= the toy world's 12 objects per room at most
SEGMENT_SCALE = 0.9  # a segment's box: its object's, shrunk about the centre -> IoU 0.9^3 = 0.729


def _scene_sample(scene_id: str, layout, unmatched: int | None, dim: int = 32) -> dict:
    """Segments in reverse object order with mask labels that are another object's id (label
    equality would name the wrong object), one unlabeled background segment, and `unmatched` left
    without a ground-truth instance."""
    objs = layout.objects[::-1]
    segments = [{"id": 0, "label": -1, "instance_id": None, "match_iou": None, "category": None,
                 "size": 40, "proxies": 1, "center": [0.5, 0.5, 0.0], "bfs_rank": 0,
                 "box": {"center": [0.5, 0.5, 0.0], "size": [1.0, 1.0, 0.1]}}]
    for k, o in enumerate(objs, start=1):
        b = o.box()
        matched = o.id != unmatched
        segments.append({"id": k, "label": objs[k % len(objs)].id, "instance_id": o.id if matched else None,
                         "match_iou": 0.8 if matched else None, "category": o.category if matched else None,
                         "size": 40, "proxies": 1, "center": b.center, "bfs_rank": k,
                         "box": {"center": b.center, "size": [SEGMENT_SCALE * s for s in b.size]}})
    segments = [SegmentInfo.model_validate(s).model_dump(mode="json") for s in segments]
    xyz_K3 = np.array([s["center"] for s in segments], np.float32)
    meta = ProxyMeta(scene_id=scene_id, num_proxies=len(segments), budget=len(segments), dim=dim,
                     num_valid_triplets=40 * len(segments), params={"test": True},
                     source={"kind": "toy"}).model_dump(mode="json")
    return {"__key__": scene_id, "feat.npy": npy_bytes(np.zeros((len(segments), dim), np.float16)),
            "xyz.npy": npy_bytes(xyz_K3), "segment.npy": npy_bytes(np.arange(len(segments), dtype=np.int32)),
            "segments.json": json_bytes(segments), "meta.json": json_bytes(meta)}


@pytest.fixture(scope="module")
def toy_captions(tmp_path_factory):
    from pipeline.toy.models import build_toy_qwen
    from pipeline.toy.shapes import CATEGORY_NAMES
    from trainer.model import Proxy3DModel

    root = tmp_path_factory.mktemp("captions")
    rng = np.random.default_rng(0)
    records, samples = [], []
    for i in range(2):
        layout = toy_layout.sample_layout(rng)
        scene_id = f"toy{i:04d}"
        records += [r for r in toy_annotate.generate_records(layout, scene_id, "val", rng)
                    if r.task == "caption"]
        samples.append(_scene_sample(scene_id, layout, unmatched=layout.objects[1].id if i == 1 else None))
    shards = root / "proxies"
    write_shard(shards / (SHARD_PATTERN % 0), samples)
    (shards / INDEX_FILE).write_text(json.dumps(index_payload({"test": True},
                                                              {s["__key__"]: SHARD_PATTERN % 0 for s in samples})))
    write_records(records, root / "records.jsonl")
    qwen = build_toy_qwen(root / "qwen", [r.question for r in records] + [r.answers[0] for r in records])
    Proxy3DModel.build(str(qwen), feat_dim=32, num_obj_tokens=NUM_OBJ_TOKENS, categories=CATEGORY_NAMES,
                       height_bins=16, height_range=(0.0, 3.0), fourier_dim=16).export(root / "model")
    return root, shards, {s["__key__"]: json.loads(s["segments.json"]) for s in samples}


def _eval(root, preds, name: str) -> dict:
    from p3d.cli import app

    write_predictions(preds, root / f"{name}.jsonl")
    res = CliRunner().invoke(app, ["eval", "--task", "caption", "--pred", str(root / f"{name}.jsonl"),
                                   "--records", str(root / "records.jsonl"),
                                   "--json", str(root / f"{name}.json")])
    assert res.exit_code == 0, res.output
    [out] = json.loads((root / f"{name}.json").read_text())["results"]
    return out


@pytest.mark.slow
@needs_java
def test_toy_captions_predict_with_the_named_segments_box_then_score_m_at_iou(toy_captions):
    from p3d.cli import app
    from trainer.objects import obj_token, segment_identifiers
    from trainer.examples import record_example

    root, shards, segments_of = toy_captions
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(root / "model"), "--shards", str(shards),
                                   "--records", str(root / "records.jsonl"),
                                   "--out", str(root / "preds.jsonl"), "--max-new-tokens", "3"])
    assert res.exit_code == 0, res.output
    records = load_records(root / "records.jsonl")
    preds = load_predictions(root / "preds.jsonl")
    assert set(preds) == {r.id for r in records}  # nothing dropped, the unmatched object included

    unasked = [r for r in records if preds[r.id].not_asked]
    [lost] = unasked
    assert lost.scene_id == "toy0001" and str(lost.target_ids[0]) in preds[lost.id].not_asked
    assert preds[lost.id].boxes is None and preds[lost.id].text == ""
    for rec in records:
        if rec is lost:
            continue
        segments = segments_of[rec.scene_id]
        [seg] = [s for s in segments if s["instance_id"] == rec.target_ids[0]]
        pred = preds[rec.id]
        assert pred.object_ids == [seg["id"]] and pred.instance_ids == rec.target_ids
        assert [b.model_dump() for b in pred.boxes] == [seg["box"]]
        # ... and that segment is the one the question asked about.
        ident = segment_identifiers(segments, NUM_OBJ_TOKENS)[seg["id"]]
        asked = record_example(rec, segments, NUM_OBJ_TOKENS, with_answer=False).question
        assert asked == f"Describe {obj_token(ident)}."

    n = len(records)
    noisy = _eval(root, list(preds.values()), "noisy")
    assert {"CIDEr@0.5", "CIDEr@0.25", "BLEU-4@0.5", "METEOR@0.5", "ROUGE-L@0.5"} <= noisy["metrics"].keys()
    assert noisy["num_missing"] == 1 and any("not asked" in note for note in noisy["notes"])

    # The reference as the caption (ROUGE-L 1 each), the predicted boxes kept: every asked caption hits
    # (IoU 0.729 > 0.5), the one not asked is "sos eos" (Scan2Cap's official eval), whose ROUGE-L
    # against "sos <t tokens> eos" is, by hand: LCS 2, precision 1, recall r = 2 / (t + 2),
    # F = (1 + 1.2^2) r / (r + 1.2^2).
    def rouge_of_miss(rec) -> float:
        r = 2 / (len(re.findall(r"\w+|[^\w\s]", rec.answers[0].lower())) + 2)
        return 2.44 * r / (r + 1.44)

    reference = {r.id: r.answers[0] for r in records}
    exact = [p.model_copy(update={"text": "" if p.not_asked else reference[p.id]}) for p in preds.values()]
    out = _eval(root, exact, "exact")
    assert sorted({round(s["iou"], 6) for s in out["per_sample"]}) == [0.0, round(SEGMENT_SCALE ** 3, 6)]
    expected = 100 * (n - 1 + rouge_of_miss(lost)) / n
    assert out["metrics"]["ROUGE-L@0.5"] == pytest.approx(expected)
    assert out["metrics"]["ROUGE-L@0.25"] == pytest.approx(expected)

    # One box moved 10 m away: that caption, word for word right, now scores as the empty caption.
    moved_id = next(p.id for p in exact if not p.not_asked)

    def away(p):
        return p.model_copy(update={"boxes": [p.boxes[0].model_copy(
            update={"center": [c + 10 for c in p.boxes[0].center]})]})

    moved = [away(p) if p.id == moved_id else p for p in exact]
    out = _eval(root, moved, "moved")
    moved_rec = next(r for r in records if r.id == moved_id)
    expected = 100 * (n - 2 + rouge_of_miss(lost) + rouge_of_miss(moved_rec)) / n
    assert out["metrics"]["ROUGE-L@0.5"] == pytest.approx(expected)
    assert out["metrics"]["ROUGE-L@0.25"] == pytest.approx(expected)
    assert next(s for s in out["per_sample"] if s["id"] == moved_id)["iou"] == 0.0
