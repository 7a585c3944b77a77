"""Steps to spatial answers: how many training steps the toy language model needs before its held-out
answers to the toy world's spatial questions beat chance, with unlimited rooms.

The demo trains on 48 rooms for a few hundred steps per stage and its spatial answers stay at chance
(docs/RESULTS.md#spatial-tasks). This probe separates the two limits, data and steps: every batch is
drawn from new rooms (`pipeline.toy.layout.sample_layout`), asked in the toy annotation's own words
(`pipeline.toy.annotate.generate_records`), on the simplified scene of stages 1-3 (one fused token per
object at its box centre, fresh identifiers per room, as `shuffle_identifiers` trains), through the
trainer's own collator, model and loss. Held-out rooms are scored with the metrics `p3d eval` uses
(MRA for numbers, exact accuracy for left/right, where `p3d eval` also reads the answer's first word)
at each checkpoint of the curve, beside chance: pipeline/eval/chance.py's constant answer (mean per
question type; the majority side), taken here from the training stream rather than from the scored
questions.

    python benchmarks/spatial.py                      # a fresh toy model, distance + left/right
    python benchmarks/spatial.py --init runs/toy/train/stage3/model --steps 4000 --tasks distance
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainer.examples import final_answer  # noqa: E402

SPATIAL_TASKS = ("distance", "relative_direction", "room_size", "object_size")
# Diagnostics the toy annotation does not ask: where an object is on the floor plan, "x y" in metres
# (what stage 2 teaches by identifier), which tells reading a position apart from computing with two;
# and which of two objects lies further along the room's x axis ("east" / "west"), left/right's
# relation in the room's fixed frame, which tells comparing two positions apart from taking a
# viewer's frame from a third.
# And left/right answered in first-order steps ("west north, north west: left": whether the faced
# object lies east or west and north or south of the viewer; of those, the way the viewer faces, the
# room axis it is closest to; which side of the viewer the object lies along the other axis; then
# left/right), each step's answer first order in the coordinates or the steps before it.
# Distance likewise ("sofa 1.0 2.0 0.4, table 2.2 1.6 0.4, 4.6 3.8: 1.3": each object by name and
# where it is, how far the second lies east and north of the first, each offset shifted to a positive
# number, then the distance). Both are the trainer's `answer_steps`
# (trainer.examples.answer_in_steps).
DIAGNOSTIC_TASKS = ("position", "east_west", "left_right_steps", "distance_steps")
EAST_WEST_MARGIN = 0.3  # metres along x under which the question is not asked (as left/right's 0.3)


@dataclass
class Question:
    room_id: str
    task: str
    question: str
    answer: str
    answer_type: str  # number, numbers or choice
    question_type: str = ""
    named_xy: tuple[tuple[float, float], ...] = ()  # floor-plan centres of the objects named, in order


@dataclass(frozen=True)
class SceneOptions:
    """How the probe's rooms are put to the model: `by_identifier` names the objects of the diagnostic
    questions by their `<OBJxxx>` token (as stage 2 asks) instead of "the sofa"; `identifiers=False`
    leaves the identifier term out of the scene tokens."""

    by_identifier: bool = False
    identifiers: bool = True


def room_questions(rng: np.random.Generator, tasks: tuple[str, ...], num_obj_tokens: int, room_id: str,
                   options: SceneOptions = SceneOptions()):
    """One new room: [(question, fused scene inputs)] for its toy records of `tasks` (and the
    diagnostic ones)."""
    from pipeline.toy.annotate import generate_records
    from pipeline.toy.layout import sample_layout
    from trainer.examples import answer_in_steps
    from trainer.objects import obj_token

    layout = sample_layout(rng)
    objs = layout.objects[:num_obj_tokens]
    ident = rng.permutation(num_obj_tokens)[:len(objs)].astype(np.int64)
    inputs = {"xyz": np.array([o.center_3 for o in objs], np.float32).reshape(-1, 3),
              "ident": ident if options.identifiers else np.full(len(objs), -1, np.int64),
              "categories": [o.category for o in objs], "feat": None}
    layout.objects = objs
    records = generate_records(layout, room_id, "train", rng)
    out = [(Question(room_id, r.task, r.question, r.answers[0], r.answer_type, r.question_type or "",
                     _centres(r)), inputs)
           for r in records if r.task in tasks]
    # The trainer's answers in steps (`answer_steps`), asked as diagnostics of their own.
    for task, asked, answer_type in (("distance_steps", "distance", "number"),
                                     ("left_right_steps", "relative_direction", "choice")):
        if task in tasks:
            out += [(Question(room_id, task, r.question,
                              answer_in_steps(asked, [tuple(b.center) for b in r.target_boxes], r.answers[0],
                                              r.target_names),
                              answer_type, named_xy=_centres(r)), inputs)
                    for r in records if r.task == asked]
    counts = defaultdict(int)
    for o in objs:
        counts[o.category] += 1
    if options.by_identifier:
        named = {id(o): obj_token(int(k)) for o, k in zip(objs, ident)}
        unique = list(objs)
    else:
        named = {id(o): f"the {o.category}" for o in objs}
        unique = [o for o in objs if counts[o.category] == 1]
    if "position" in tasks:
        out += [(Question(room_id, "position", f"Where is {named[id(o)]}?",
                          f"{o.center_3[0]:.1f} {o.center_3[1]:.1f}", "numbers", named_xy=(_xy(o),)), inputs)
                for o in unique]
    if "east_west" in tasks:
        pairs = [(a, c) for a in unique for c in unique
                 if a is not c and abs(c.center_3[0] - a.center_3[0]) >= EAST_WEST_MARGIN]
        for k in rng.permutation(len(pairs))[:max(2, len(objs))]:
            a, c = pairs[int(k)]
            out.append((Question(room_id, "east_west", f"Is {named[id(c)]} east or west of {named[id(a)]}?",
                                 "east" if c.center_3[0] > a.center_3[0] else "west", "choice",
                                 named_xy=(_xy(c), _xy(a))), inputs))
    return out


def _centres(record) -> tuple[tuple[float, float], ...]:
    """Floor-plan centres of a record's target objects, in the question's order."""
    return tuple((b.center[0], b.center[1]) for b in record.target_boxes)


def _xy(obj) -> tuple[float, float]:
    return float(obj.center_3[0]), float(obj.center_3[1])


def question_stream(seed: int, tasks: tuple[str, ...], num_obj_tokens: int, rooms: int | None = None,
                    options: SceneOptions = SceneOptions()):
    """Endless (record, inputs) from new rooms, shuffled within a pool of rooms; with `rooms`, from
    that many rooms only, pass after pass in a new order (the demo's case: 72 training rooms)."""
    rng, pool, n = np.random.default_rng(seed), [], 0
    if rooms is not None:
        fixed = [q for k in range(rooms) for q in room_questions(rng, tasks, num_obj_tokens, f"room{k:06d}",
                                                                 options)]
        if not fixed:
            raise ValueError(f"{rooms} rooms hold no question of {tasks}")
        while True:
            yield from (fixed[i] for i in rng.permutation(len(fixed)))
    while True:
        while len(pool) < 64:
            pool += room_questions(rng, tasks, num_obj_tokens, f"room{n:06d}", options)
            n += 1
        i = int(rng.integers(len(pool)))
        pool[i], pool[-1] = pool[-1], pool[i]
        yield pool.pop()


def chance_constants(seed: int, tasks: tuple[str, ...], num_obj_tokens: int, samples: int = 4000,
                     options: SceneOptions = SceneOptions()):
    """The training answers' constant per (task, question type): mean number, or the majority choice."""
    values = defaultdict(list)
    stream = question_stream(seed, tasks, num_obj_tokens, options=options)
    for _ in range(samples):
        q, _ = next(stream)
        values[(q.task, q.question_type)].append(q)
    out = {}
    for key, asked in values.items():
        answers = [q.answer for q in asked]
        if asked[0].answer_type == "choice":  # the majority answer after any steps: the side, not the steps
            finals = [final_answer(a) for a in answers]
            out[key] = max(set(finals), key=finals.count)
        else:
            numbers_NA = np.array([[float(x) for x in final_answer(a).split()] for a in answers])
            out[key] = " ".join(f"{v:.1f}" for v in numbers_NA.mean(0))
    return out


def first_order_share(questions: list[Question]) -> dict[str, dict[str, float]]:
    """How much of each task's answer a least-squares fit on the named objects' floor-plan
    coordinates explains, with the coordinates alone (`linear`) and with their pairwise products too
    (`quadratic`): R^2 for numbers (the first number of "x y"), the fit's sign accuracy for a choice
    (the first answer seen coded +1, the other -1). A gradient step on a model that reads positions
    follows the first-order part; an answer with none needs products of readings that nothing
    rewards until they exist (docs/RESULTS.md#spatial-probe)."""
    by_task = defaultdict(list)
    for q in questions:
        if q.named_xy:  # every question of a task names the same number of objects
            by_task[q.task].append(q)
    out = {}
    for task, asked in sorted(by_task.items()):
        coords_NF = np.array([[v for xy in q.named_xy for v in xy] for q in asked])
        coords_NF = coords_NF - coords_NF.mean(0)
        if asked[0].answer_type == "choice":
            positive = final_answer(asked[0].answer)
            target_N = np.array([1.0 if final_answer(q.answer) == positive else -1.0 for q in asked])
        else:
            target_N = np.array([float(final_answer(q.answer).split()[0]) for q in asked])
        n, f = coords_NF.shape
        pairs = [coords_NF[:, i] * coords_NF[:, j] for i in range(f) for j in range(i, f)]
        row = {}
        for name, design_NP in (("linear", np.c_[coords_NF, np.ones(n)]),
                                ("quadratic", np.c_[coords_NF, np.stack(pairs, 1), np.ones(n)])):
            fit_N = design_NP @ np.linalg.lstsq(design_NP, target_N, rcond=None)[0]
            if asked[0].answer_type == "choice":
                row[name] = float(np.mean(np.sign(fit_N) == target_N))
            else:
                row[name] = float(1 - ((target_N - fit_N) ** 2).sum() / ((target_N - target_N.mean()) ** 2).sum())
        row["questions"] = n
        row["measure"] = "sign accuracy" if asked[0].answer_type == "choice" else "R^2"
        out[task] = row
    return out


def score(q: Question, text: str) -> float:
    """Accuracy for a choice, MRA for a number (per number, averaged, for "x y"); an answer given in
    steps ("west north, north west: left", "4.6 3.8: 1.3") is scored on what follows them."""
    from pipeline.eval.metrics import mean_relative_accuracy
    from pipeline.eval.text import parse_number

    if q.answer_type == "choice":
        return float(final_answer(text).lower() == final_answer(q.answer))
    if q.answer_type == "number":
        return mean_relative_accuracy(parse_number(final_answer(text)), float(final_answer(q.answer)))
    said = text.split()
    return float(np.mean([mean_relative_accuracy(parse_number(said[i]) if i < len(said) else None, float(gt))
                          for i, gt in enumerate(q.answer.split())]))


def evaluate(model, collate, held_out, stops, batch_size: int = 64) -> dict[str, float]:
    import torch

    from trainer.examples import Example
    from trainer.predict import clean_text, until_stop

    model.eval()
    per_task = defaultdict(list)
    for start in range(0, len(held_out), batch_size):
        part = held_out[start:start + batch_size]
        batch = collate([(Example(q.room_id, q.task, q.question, ""), inputs) for q, inputs in part],
                        with_answer=False)
        with torch.inference_mode():
            generated = model.generate(batch, max_new_tokens=16)
        for (q, _), ids in zip(part, generated):
            text = clean_text(model.tokenizer.decode(until_stop(ids, stops), skip_special_tokens=False))
            per_task[q.task].append(score(q, text))
    model.train()
    return {task: 100.0 * float(np.mean(v)) for task, v in per_task.items()}


def chance_scores(held_out, constants) -> dict[str, float]:
    per_task = defaultdict(list)
    for q, _ in held_out:
        per_task[q.task].append(score(q, constants[(q.task, q.question_type)]))
    return {task: 100.0 * float(np.mean(v)) for task, v in per_task.items()}


def load_model(init: str | None, tmp: Path, num_layers: int | None = None, tasks: tuple[str, ...] = ()):
    from pipeline.toy.models import build_toy_qwen
    from pipeline.toy.shapes import CATEGORY_NAMES
    from trainer.model import Proxy3DModel

    if init:
        return Proxy3DModel.from_pretrained(init)
    texts = [f"How far apart are the {a} and the {b} in meters? Standing at the {a} facing the {b}, is "
             f"the {c} to the left or to the right? How tall is the {a} in meters? Where is the {a}?"
             # only when asked: the tokenizer (and so the curves measured without it) stays as it was
             + (f" Is the {c} east or west of the {a}?" if "east_west" in tasks else "")
             + (" north south east west: left right" if "left_right_steps" in tasks else "")
             for a, b, c in zip(CATEGORY_NAMES, CATEGORY_NAMES[1:], CATEGORY_NAMES[2:])]
    base = build_toy_qwen(tmp / "qwen", texts, num_layers=num_layers)
    # The toy workflow's train section (workflows/toy.yaml): 32 identifiers, 64 height bins.
    return Proxy3DModel.build(str(base), feat_dim=64, num_obj_tokens=32, categories=CATEGORY_NAMES,
                              height_bins=64, height_range=(-0.5, 3.5), fourier_dim=64)


def main() -> None:
    import torch

    from trainer.examples import Example
    from trainer.predict import stop_ids
    from trainer.shard_reader import Collator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", help="an exported p3d folder (e.g. the demo's runs/toy/train/stage3/model); "
                   "default: a fresh random-weight toy model")
    p.add_argument("--tasks", default="distance,relative_direction",
                   help=f"comma-separated, of {', '.join(SPATIAL_TASKS + DIAGNOSTIC_TASKS)}")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--held-out", type=int, default=400, help="held-out questions")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rooms", type=int, help="train on this many rooms only (default: a new room for every "
                   "few questions); tells the data the demo has (72 rooms) apart from the steps")
    p.add_argument("--layers", type=int, help="language-model depth of the fresh model (default: the toy "
                   "model's 2)")
    p.add_argument("--fourier-sigma", type=float, help="re-initialise the (x, y) Fourier features with this "
                   "frequency spread (trainer/positions.py FourierXY `sigma`; fresh models only)")
    p.add_argument("--fourier-out-scale", type=float, help="... and this output scale (`out_scale`)")
    p.add_argument("--by-identifier", action="store_true", help="name the objects of the diagnostic tasks "
                   "(position, east_west) by their <OBJxxx> token, as stage 2 asks, not by category")
    p.add_argument("--no-identifiers", action="store_true", help="scene tokens without the identifier term "
                   "(how much its noise slows reading a position)")
    p.add_argument("--first-order", type=int, metavar="N", help="train nothing: fit each task's answers "
                   "on the named objects' coordinates (linear, and with their products) over N questions "
                   "and print how much each explains (`first_order_share`)")
    p.add_argument("--json", help="also write the curve here")
    p.add_argument("--save", help="export the trained model to this folder (an --init for a later run: a "
                   "curriculum, one task after another)")
    args = p.parse_args()
    tasks = tuple(t for t in args.tasks.split(",") if t)
    unknown = sorted(set(tasks) - set(SPATIAL_TASKS + DIAGNOSTIC_TASKS))
    if unknown:
        p.error(f"--tasks: unknown {unknown}; choose from {SPATIAL_TASKS + DIAGNOSTIC_TASKS}")
    if args.first_order:
        stream = question_stream(args.seed, tasks, 32)
        shares = first_order_share([next(stream)[0] for _ in range(args.first_order)])
        print(f"{'task':>20} {'measure':>14} {'linear':>8} {'quadratic':>10} {'questions':>10}")
        for task, row in shares.items():
            print(f"{task:>20} {row['measure']:>14} {row['linear']:>8.3f} {row['quadratic']:>10.3f} "
                  f"{row['questions']:>10}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        if args.init and args.layers:
            p.error("--layers: a trained model keeps its depth")
        model = load_model(args.init, Path(tmp), args.layers, tasks)
        if args.fourier_sigma is not None or args.fourier_out_scale is not None:
            from trainer.positions import FourierXY

            # Only stages 2-4 train the Fourier features (stage 1 trains naming): a stage-1 model's are
            # as built, and re-drawing them at another sigma or scale loses nothing.
            if args.init and any(stage > 1 for stage in model.cfg.stages_done):
                p.error("--fourier-*: a model past stage 1 has trained its Fourier features; they are not "
                        "re-drawn")
            if args.fourier_sigma is not None:
                model.cfg.fourier_sigma = args.fourier_sigma
            if args.fourier_out_scale is not None:
                model.cfg.fourier_out_scale = args.fourier_out_scale
            model.fourier = FourierXY(model.cfg.hidden_size, model.cfg.fourier_dim, sigma=model.cfg.fourier_sigma,
                                      out_scale=model.cfg.fourier_out_scale)
        model.set_trainable(["position", "language_model"])  # the toy workflow's stages 2-3
        model.cfg.fourier_on = True  # as a stage from train.fourier_from_stage on
        model.train()
        n_obj = model.cfg.num_obj_tokens
        collate = Collator(model.tokenizer, model.cfg, model.category_ids)
        eval_collate = Collator(model.tokenizer, model.cfg, model.category_ids, padding_side="left")
        # Held-out rooms come from another seed's stream: no room is both trained on and scored.
        options = SceneOptions(by_identifier=args.by_identifier, identifiers=not args.no_identifiers)
        held_stream = question_stream(10_000 + args.seed, tasks, n_obj, options=options)
        held_out = [next(held_stream) for _ in range(args.held_out)]
        chance = chance_scores(held_out, chance_constants(20_000 + args.seed, tasks, n_obj, options=options))
        stops = stop_ids(model)
        params = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        warmup = max(1, args.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        train_stream = question_stream(args.seed, tasks, n_obj, args.rooms, options)

        depth = len(model.lm.model.language_model.layers)
        print(f"model: {args.init or 'fresh toy model'} ({depth} layers); tasks {', '.join(tasks)}; "
              f"batch {args.batch}, lr {args.lr}; training rooms: {args.rooms or 'unlimited'}; "
              f"{len(held_out)} held-out questions from unseen rooms")
        print(f"{'step':>6} {'loss':>7} {'min':>5}  " + "  ".join(f"{t:>18}" for t in tasks))
        print(f"{'chance':>20}  " + "  ".join(f"{chance.get(t, float('nan')):>18.1f}" for t in tasks))
        curve, losses, start = [], [], time.perf_counter()

        def checkpoint(step: int) -> None:
            acc = evaluate(model, eval_collate, held_out, stops)
            loss = float(np.mean(losses)) if losses else float("nan")
            losses.clear()
            curve.append({"step": step, "loss": loss, "minutes": (time.perf_counter() - start) / 60, **acc})
            print(f"{step:>6} {loss:>7.3f} {curve[-1]['minutes']:>5.1f}  "
                  + "  ".join(f"{acc.get(t, float('nan')):>18.1f}" for t in tasks), flush=True)

        checkpoint(0)
        for step in range(1, args.steps + 1):
            items = [next(train_stream) for _ in range(args.batch)]
            batch = collate([(Example(q.room_id, q.task, q.question, q.answer), inputs) for q, inputs in items])
            loss = model(batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if step % args.eval_every == 0 or step == args.steps:
                checkpoint(step)
        if args.save:
            model.export(args.save)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "chance": chance, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
