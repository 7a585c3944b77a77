"""benchmarks/spatial.py, the steps-to-spatial-answers probe: its rooms are asked what the toy
annotation asks, with answers that are the rooms' geometry; its scores are the eval metrics; it runs
through the trainer's own collator and model and prints its curve beside chance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.spatial import (  # noqa: E402
    Question,
    SceneOptions,
    chance_constants,
    chance_scores,
    first_order_share,
    question_stream,
    room_questions,
    score,
)
from tests.answer_steps_helpers import read_distance_steps  # noqa: E402
from trainer.examples import answer_in_steps, final_answer  # noqa: E402


def mra(pred: float, gt: float) -> float:
    """VSI-Bench's MRA written out: thresholds 0.50, 0.55, ..., 0.95."""
    return sum(abs(pred - gt) / gt <= 1 - t for t in [0.5 + 0.05 * i for i in range(10)]) / 10


def test_rooms_ask_about_their_own_geometry():
    rng = np.random.default_rng(3)
    sides = set()
    for n in range(5):
        items = room_questions(rng, ("distance", "position", "relative_direction", "east_west"), 32, f"room{n}")
        inputs = items[0][1]
        xyz_K3 = inputs["xyz"]
        assert len(set(inputs["ident"].tolist())) == len(xyz_K3)  # distinct identifiers
        centre_of = {c: xyz_K3[i] for i, c in enumerate(inputs["categories"])
                     if inputs["categories"].count(c) == 1}
        tasks = {q.task for q, _ in items}
        assert {"distance", "position"} <= tasks
        for q, scene in items:
            assert scene is inputs
            # the named objects' centres, in the question's order
            names = "|".join(sorted(map(re.escape, centre_of), key=len, reverse=True))
            named = re.findall(rf"the ({names})\b", q.question)
            np.testing.assert_allclose([centre_of[c][:2] for c in named], q.named_xy, atol=1e-4)
            if q.task == "position":
                cat = q.question.removeprefix("Where is the ").removesuffix("?")
                assert q.answer == f"{centre_of[cat][0]:.1f} {centre_of[cat][1]:.1f}"
            elif q.task == "distance":
                a, b = re.fullmatch(r"How far apart are the (.+) and the (.+) in meters\?", q.question).groups()
                assert abs(float(q.answer) - np.linalg.norm(centre_of[a] - centre_of[b])) <= 0.051
            elif q.task == "east_west":  # east: further along the room's x axis
                c, a = re.fullmatch(r"Is the (.+) east or west of the (.+)\?", q.question).groups()
                dx = centre_of[c][0] - centre_of[a][0]
                assert abs(dx) >= 0.3 and q.answer == ("east" if dx > 0 else "west")
                sides.add(q.answer)
    assert sides == {"east", "west"}


def test_diagnostics_named_by_identifier_ask_about_the_object_carrying_that_identifier():
    rng = np.random.default_rng(4)
    asked = set()
    for n in range(5):
        items = room_questions(rng, ("position", "east_west"), 32, f"room{n}", SceneOptions(by_identifier=True))
        inputs = items[0][1]
        centre_of = {f"<OBJ{k:03d}>": xyz for k, xyz in zip(inputs["ident"].tolist(), inputs["xyz"])}
        # every object is asked about, also one whose category repeats in the room
        assert {re.search(r"<OBJ\d{3}>", q.question)[0] for q, _ in items if q.task == "position"} == set(centre_of)
        for q, _ in items:
            asked.add(q.task)
            if q.task == "position":
                x, y = centre_of[re.fullmatch(r"Where is (<OBJ\d{3}>)\?", q.question)[1]][:2]
                assert q.answer == f"{x:.1f} {y:.1f}"
            else:
                c, a = re.fullmatch(r"Is (<OBJ\d{3}>) east or west of (<OBJ\d{3}>)\?", q.question).groups()
                assert q.answer == ("east" if centre_of[c][0] > centre_of[a][0] else "west")
    assert asked == {"position", "east_west"}


def test_rooms_without_identifiers_keep_their_questions_and_geometry():
    with_ids = room_questions(np.random.default_rng(6), ("distance", "position"), 32, "r")
    without = room_questions(np.random.default_rng(6), ("distance", "position"), 32, "r",
                             SceneOptions(identifiers=False))
    assert [(q.question, q.answer) for q, _ in with_ids] == [(q.question, q.answer) for q, _ in without]
    np.testing.assert_array_equal(with_ids[0][1]["xyz"], without[0][1]["xyz"])
    assert (with_ids[0][1]["ident"] >= 0).all() and (without[0][1]["ident"] == -1).all()


def test_first_order_share_tells_answers_linear_in_positions_from_ones_that_need_products():
    rng = np.random.default_rng(7)
    qs = []
    for _ in range(2000):
        a, b, c = rng.uniform(0, 6, (3, 2))
        cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        named = tuple(map(tuple, (a, b, c)))
        qs.append(Question("r", "side", "?", "left" if cross > 0 else "right", "choice", named_xy=named))
        qs.append(Question("r", "offset", "?", f"{2 * b[0] - a[1] + 1:.6f}", "number", named_xy=named[:2]))
        qs.append(Question("r", "dist2", "?", f"{np.sum((a - b) ** 2):.6f}", "number", named_xy=named[:2]))
        qs.append(Question("r", "further", "?", "east" if b[0] > a[0] else "west", "choice", named_xy=named[:2]))
    share = first_order_share(qs)
    # a linear answer is all first order
    assert share["offset"]["linear"] == pytest.approx(1.0, abs=1e-6) and share["offset"]["measure"] == "R^2"
    # a squared distance is a quadratic form: products explain it exactly, coordinates barely
    assert share["dist2"]["quadratic"] == pytest.approx(1.0, abs=1e-6) and share["dist2"]["linear"] < 0.1
    # the sign of a cross product (left/right): a coin flip from coordinates, exact from products
    assert abs(share["side"]["linear"] - 0.5) < 0.05 and share["side"]["quadratic"] > 0.95
    assert share["further"]["linear"] > 0.98 and share["further"]["measure"] == "sign accuracy"
    assert share["side"]["questions"] == 2000


def test_left_right_in_steps_names_the_facing_axis_then_the_other_then_the_annotations_answer():
    # the faced object east and north: facing mostly east (+x), the object told north/south of the viewer
    assert answer_in_steps("relative_direction", ((1.0, 1.0), (4.0, 2.0), (2.0, 3.0)), "left") == "east north, east north: left"
    # east and south: facing mostly south (-y), told east/west
    assert answer_in_steps("relative_direction", ((1.0, 5.0), (1.5, 1.0), (0.2, 3.0)), "right") == "east south, south west: right"
    rng = np.random.default_rng(8)
    items = [q for n in range(20)
             for q, _ in room_questions(rng, ("relative_direction", "left_right_steps"), 32, f"r{n}")]
    plain = {(q.room_id, q.question): q.answer for q in items if q.task == "relative_direction"}
    steps = [q for q in items if q.task == "left_right_steps"]
    assert steps and len(steps) == len(plain)
    # the same questions, ending in the annotation's own side
    assert all(final_answer(q.answer) == plain[(q.room_id, q.question)] for q in steps)
    # a viewer facing north with the object west of it has it on the left (z up, seen from above)
    ccw = {("north", "west"), ("west", "south"), ("south", "east"), ("east", "north")}
    agree = [(tuple(q.answer.split(":")[0].split(", ")[1].split()) in ccw) == (final_answer(q.answer) == "left") for q in steps]
    assert np.mean(agree) > 0.85
    # chance is the majority side, whatever steps the most common full answers take
    constant = chance_constants(8, ("left_right_steps",), 32, samples=2000)[("left_right_steps", "")]
    sides = [final_answer(item[0].answer) for item, _ in zip(question_stream(8, ("left_right_steps",), 32), range(2000))]
    assert constant in ("left", "right") and sides.count(constant) >= len(sides) / 2
    # scored on the final answer, whatever the steps before it
    q = steps[0]
    assert score(q, f"up down: {final_answer(q.answer)}") == 1.0 and score(q, q.answer) == 1.0
    assert score(q, "left" if final_answer(q.answer) == "right" else "right") == 0.0


def test_distance_in_steps_gives_the_offsets_then_the_annotations_distance_and_is_scored_on_it():
    rng = np.random.default_rng(9)
    items = [q for n in range(10) for q, _ in room_questions(rng, ("distance", "distance_steps"), 32, f"r{n}")]
    plain = {(q.room_id, q.question): q.answer for q in items if q.task == "distance"}
    steps = [q for q in items if q.task == "distance_steps"]
    assert steps and len(steps) == len(plain)
    for q in steps:
        read = read_distance_steps(q.answer)
        final = final_answer(q.answer)
        assert final == plain[(q.room_id, q.question)]
        (ax, ay), (bx, by) = q.named_xy
        assert read["a"][:2] == pytest.approx((ax, ay), abs=0.051) and read["b"][:2] == pytest.approx((bx, by), abs=0.051)
        assert all(f"the {name} " in q.question for name in read["names"])
        u, v = read["offsets"]
        dx, dy = 2 * u - 8.0, 2 * v - 8.0  # the steps are (offset + 8) / 2, to 0.1
        assert abs(dx - (bx - ax)) <= 0.101 and abs(dy - (by - ay)) <= 0.101
        # the floor-plan offset is the 3D distance up to the objects' height difference
        assert np.hypot(dx, dy) <= float(final) + 0.25
    q = steps[0]
    assert score(q, f"9.9 9.9: {final_answer(q.answer)}") == 1.0 and score(q, final_answer(q.answer)) == 1.0
    assert score(q, f"{final_answer(q.answer)} 0.0: 99") == 0.0  # the number after the steps counts
    held = [(q, None) for q in steps]
    const = chance_scores(held, {("distance_steps", ""): "0.0 0.0: 3.0"})["distance_steps"]
    assert const == pytest.approx(100 * np.mean([mra(3.0, float(final_answer(q.answer))) for q in steps]))


def test_held_out_rooms_are_not_training_rooms():
    stream, held = question_stream(0, ("distance",), 32), question_stream(10_000, ("distance",), 32)
    train = {np.round(next(stream)[1]["xyz"], 4).tobytes() for _ in range(200)}
    assert not train & {np.round(next(held)[1]["xyz"], 4).tobytes() for _ in range(200)}


def test_a_fixed_number_of_rooms_is_cycled_every_question_once_per_pass():
    stream = question_stream(5, ("distance",), 32, rooms=3)
    first = [next(stream) for _ in range(200)]
    rooms = {q.room_id for q, _ in first}
    assert rooms == {"room000000", "room000001", "room000002"}  # 3 rooms, nothing new ever
    keys = [(q.room_id, q.question) for q, _ in first]
    per_pass = len(set(keys))
    # each pass asks every question once, in a new order
    assert sorted(keys[:per_pass]) == sorted(keys[per_pass:2 * per_pass])
    assert keys[:per_pass] != keys[per_pass:2 * per_pass]


def test_scores_are_the_eval_metrics():
    number = Question("r", "distance", "?", "2.0", "number")
    assert score(number, "2.0") == 1.0 and score(number, "far") == 0.0
    assert score(number, "2.5") == pytest.approx(mra(2.5, 2.0))
    pair = Question("r", "position", "?", "1.0 4.0", "numbers")
    assert score(pair, "1.0 2.0") == pytest.approx((1.0 + mra(2.0, 4.0)) / 2)
    assert score(pair, "1.0") == pytest.approx(0.5)  # a missing number scores 0
    side = Question("r", "relative_direction", "?", "left", "choice")
    assert score(side, "left") == 1.0 and score(side, "right") == 0.0
    held = [(number, None), (Question("r", "distance", "?", "4.0", "number"), None)]
    assert chance_scores(held, {("distance", ""): "3.0"})["distance"] == pytest.approx(
        100 * (mra(3.0, 2.0) + mra(3.0, 4.0)) / 2)


@pytest.mark.slow
def test_the_probe_trains_and_prints_its_curve_beside_chance(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/spatial.py", "--steps", "3", "--eval-every", "3",
                           "--held-out", "12", "--batch", "4", "--tasks", "distance,position",
                           "--fourier-sigma", "0.3", "--layers", "3", "--rooms", "4",
                           "--json", str(tmp_path / "curve.json"), "--save", str(tmp_path / "model")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chance" in proc.stdout
    # the depth printed is the loaded model's, built at the depth asked for
    assert "(3 layers)" in proc.stdout and "training rooms: 4" in proc.stdout
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert [row["step"] for row in curve["curve"]] == [0, 3]
    assert np.isfinite(curve["curve"][-1]["loss"])
    assert set(curve["chance"]) == {"distance", "position"}
    assert all(0 <= curve["curve"][-1][t] <= 100 for t in ("distance", "position"))
    # --save exports the trained model; --init continues from it (a curriculum), scoring it at step 0
    # exactly as the first run scored it at its last step
    assert (tmp_path / "model" / "p3d_config.json").exists()
    proc = subprocess.run([sys.executable, "benchmarks/spatial.py", "--init", str(tmp_path / "model"),
                           "--steps", "1", "--eval-every", "1", "--held-out", "12", "--batch", "4",
                           "--tasks", "distance,position", "--json", str(tmp_path / "again.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "again.json").read_text())
    assert "(3 layers)" in proc.stdout
    assert {t: again["curve"][0][t] for t in ("distance", "position")} == \
        {t: curve["curve"][-1][t] for t in ("distance", "position")}
