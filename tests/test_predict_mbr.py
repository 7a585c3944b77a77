"""`p3d predict --mbr-tasks`: number answers decoded by minimum Bayes risk under MRA over sampled
answers (trainer/predict.py), every other answer greedy."""

from __future__ import annotations

import json
import random

import pytest

from tests.synthetic_shards import untrained_model

MRA_THRESHOLDS = [0.50 + 0.05 * k for k in range(10)]  # VSI-Bench's 0.50, 0.55, ..., 0.95


def _mra(pred: float, gt: float) -> float:
    return sum(abs(pred - gt) / gt <= 1 - t for t in MRA_THRESHOLDS) / len(MRA_THRESHOLDS)


def test_mbr_candidates_leave_out_samples_cut_before_their_answer_while_any_is_whole():
    from trainer.predict import mbr_candidates

    texts = ["bed 2.6 6.5 0.5, cabinet 0.3", "bed 2.6 6.5 0.5, cabinet 0.3 2.6 0.6, 2.9 2.1: 4.5", "no", "3.0"]
    # the cut one reads as 2.6 (a step's number); "no" states none
    assert mbr_candidates(texts, [True, False, False, False], "number") == [(1, 4.5), (3, 3.0)]
    # every sample cut: the numbers they state are all there is
    assert mbr_candidates(texts[:1], [True], "number") == [(0, 2.6)]
    assert mbr_candidates(["nan", "inf"], [False, False], "number") == []


def test_mbr_index_keeps_the_answer_nearest_the_others_under_mra():
    from trainer.predict import mbr_index

    # By hand: 1.12 is within 12 % of 1.0 (8 thresholds), 8.9 % of 1.23 (9), 78 % of 5.0 (none):
    # 1 + 0.8 + 0.9 = 2.7; 1.0 and 1.23 make 2.5 each, 5.0 makes 1. The mean (2.09) is none of them.
    assert mbr_index([1.0, 1.12, 1.23, 5.0]) == 1
    assert mbr_index([3.0, 3.0]) == 0  # ties: the first
    rng = random.Random(0)
    for _ in range(50):
        values = [rng.lognormvariate(1.0, 0.6) for _ in range(rng.randint(2, 12))]
        expected = [sum(_mra(c, v) for v in values) for c in values]
        assert expected[mbr_index(values)] == pytest.approx(max(expected))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An exported untrained Proxy3D folder (its sampled answers hold digits often enough to decode),
    synthetic shards and records (counting: number answers)."""
    folder, _, shards, records = untrained_model(
        tmp_path_factory.mktemp("mbr"), ["What is a chair?", "How many lamps are in the room? 0 1 2 3 4 5 6 7 8 9"],
        num_scenes=4)
    return folder, shards, records


def _predict(exported, out, records=None, **kw) -> dict[str, dict]:
    from trainer.predict import predict

    folder, shards, all_records = exported
    predict(folder, shards, records or all_records, out, split=None, **{"max_new_tokens": 5, **kw})
    return {d["id"]: d for d in map(json.loads, out.read_text().splitlines())}


def test_mbr_answers_number_tasks_reproducibly_record_by_record_and_leaves_the_rest_greedy(exported, tmp_path):
    greedy = _predict(exported, tmp_path / "greedy.jsonl")
    mbr = _predict(exported, tmp_path / "mbr.jsonl", mbr_tasks=["counting"], mbr_samples=6)
    counting = [i for i, d in mbr.items() if d["task"] == "counting"]
    assert counting and all(mbr[i]["decoding"] == "mbr 6" for i in counting)
    assert {i: d for i, d in mbr.items() if i not in counting} == {i: d for i, d in greedy.items()
                                                                      if i not in counting}
    assert all("decoding" not in greedy[i] for i in counting)
    assert sum(mbr[i]["text"] != greedy[i]["text"] for i in counting) > len(counting) // 2
    # The same run again, and one scene's records alone: the same answers (a seed per record).
    assert _predict(exported, tmp_path / "again.jsonl", mbr_tasks=["counting"], mbr_samples=6) == mbr
    folder, shards, records = exported
    lines = records.read_text().splitlines()
    scene = json.loads(lines[0])["scene_id"]
    alone = tmp_path / "alone.jsonl"
    alone.write_text("\n".join(ln for ln in lines if json.loads(ln)["scene_id"] == scene) + "\n")
    subset = _predict(exported, tmp_path / "subset.jsonl", records=alone, mbr_tasks=["counting"], mbr_samples=6)
    assert subset and all(subset[i] == mbr[i] for i in subset)
    # Another seed draws other answers.
    reseeded = _predict(exported, tmp_path / "seed1.jsonl", mbr_tasks=["counting"], mbr_samples=6, seed=1)
    assert any(reseeded[i]["text"] != mbr[i]["text"] for i in counting)


def test_mbr_refuses_tasks_whose_answers_are_not_numbers(exported, tmp_path):
    with pytest.raises(ValueError, match="grounding have answers that are not numbers"):
        _predict(exported, tmp_path / "p.jsonl", mbr_tasks=["grounding"])
    with pytest.raises(ValueError, match="at least 2"):
        _predict(exported, tmp_path / "p.jsonl", mbr_tasks=["counting"], mbr_samples=1)


def test_answers_that_run_into_max_new_tokens_are_counted_by_task_and_said(exported, tmp_path, caplog):
    """An answer cut by max_new_tokens is scored as written (a step before the answer reads as a
    wrong answer); `p3d predict` says how many, by task. With one new token, an answer either is the
    end token alone (empty text) or was cut."""
    import logging
    import re

    from trainer.predict import was_cut

    assert was_cut([5, 6, 7], {9}) and not was_cut([5, 9, 0], {9}) and not was_cut([9], {9, 3})
    with caplog.at_level(logging.WARNING, logger="p3d.predict"):
        preds = _predict(exported, tmp_path / "one.jsonl", max_new_tokens=1)
    asked = [d for d in preds.values() if not d.get("not_asked")]
    said = [r.getMessage() for r in caplog.records if "ran into max_new_tokens=1" in r.getMessage()]
    nonempty = [d for d in asked if d["text"]]
    assert nonempty and len(said) == 1
    assert int(said[0].split()[0]) == len(nonempty)
    by_task = dict((t, int(n)) for t, n in re.findall(r"(\w+) (\d+)", said[0].split("without ending (")[1].split(")")[0]))
    assert by_task == {t: sum(d["task"] == t for d in nonempty) for t in {d["task"] for d in nonempty}}
    # Each cut answer is marked in its prediction, and `p3d eval` counts them per group.
    assert all(d.get("cut") is True for d in nonempty) and not any(d.get("cut") for d in asked if not d["text"])
    from pipeline.eval.evaluate import evaluate, format_table
    from pipeline.eval.predictions import load_predictions
    from schemas.record import load_records

    results = evaluate(load_records(exported[2]), load_predictions(tmp_path / "one.jsonl"))
    assert {r.name.split("/")[-1]: r.num_cut for r in results if r.num_cut} == by_task
    assert all(r.to_json()["num_cut"] == r.num_cut for r in results)
    table = format_table(results)
    for r in results:
        assert (f"note ({r.name}): {r.num_cut} answers ran into the generation limit" in table) == bool(r.num_cut)
