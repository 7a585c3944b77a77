"""Chance of number tasks: one constant answer per question type (hand-computed)."""

from __future__ import annotations

import pytest

from pipeline.eval.chance import chance_level
from schemas.record import Record


def _rec(i: int, answer: str, qtype: str | None, task: str = "room_size") -> Record:
    return Record(id=f"r{i}", scene_id="s", task=task, source="toy", question="q", answers=[answer],
                  answer_type="number", question_type=qtype)


def test_continuous_chance_is_per_question_type():
    # area 10, 13 -> constant 11.5: relative errors 0.15, 0.115 -> 8 of 10 thresholds each;
    # height 2.0, 2.9 -> constant 2.45: errors 0.225 (6 of 10), 0.155 (7 of 10).
    answers = [("10.0", "area"), ("13.0", "area"), ("2.0", "height"), ("2.9", "height")]
    recs = [_rec(i, a, q) for i, (a, q) in enumerate(answers)]
    assert chance_level("room_size", recs)["MRA"] == pytest.approx(100 * (0.8 + 0.8 + 0.6 + 0.7) / 4)
    # Without types, one constant 6.975 for all: errors 0.3025 (4 of 10), 0.46 (1), 2.49 (0), 1.41 (0).
    untyped = [_rec(i, a, None) for i, (a, _) in enumerate(answers)]
    assert chance_level("room_size", untyped)["MRA"] == pytest.approx(100 * (0.4 + 0.1) / 4)


def test_integer_chance_is_the_majority_per_question_type():
    # type a: 1, 1, 4 -> majority 1 (4 misses: error 0.75); type b: 3, 3 -> 3.
    answers = [("1", "a"), ("1", "a"), ("4", "a"), ("3", "b"), ("3", "b")]
    recs = [_rec(i, a, q, task="counting") for i, (a, q) in enumerate(answers)]
    assert chance_level("counting", recs) == pytest.approx({"MRA": 80.0, "EM": 80.0})
    # One majority (1) for all: EM 2 of 5; MRA 1 + 1 + 0 + 0 + 0 (3 against 1: error 0.67).
    untyped = [_rec(i, a, None, task="counting") for i, (a, _) in enumerate(answers)]
    assert chance_level("counting", untyped) == pytest.approx({"MRA": 40.0, "EM": 40.0})
