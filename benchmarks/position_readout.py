"""Position readout of a trained checkpoint: how well it states where objects are on held-out scenes.

Asks "Where is the <category>?" of every object alone in its category in each held-out scene (the
stage-2 question `train.position_names: [category]` trains, trainer/examples.py `stage2_examples`),
on the scene form the checkpoint reads (simplified scene after stages 1-3, proxies after stage 4;
trainer/predict.py `load_for_prediction`), greedy, and compares the stated east / north coordinates
with the segments' box centres: correlation, mean absolute error and spread per axis, and the share
within 0.5 m. This tells a model that reads both floor axes from one that reads one of them
(docs/RESULTS.md#toy-spatial-seeds). Then the distance records of those scenes answered from these
stated positions alone (the norm of the difference of the two named objects' answers), MRA beside
its chance: what a model that relates its own position answers exactly would score, against what it
answers when asked the distance (docs/RESULTS.md#distance-readout). Asserts nothing.

  python benchmarks/position_readout.py runs/toy/train/stage2/model \
      --shards data/toy/proxies/default --records data/toy/annotations.jsonl [--split val]
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.eval.chance import chance_level  # noqa: E402
from pipeline.eval.metrics import mean_relative_accuracy  # noqa: E402
from pipeline.eval.text import parse_number  # noqa: E402
from schemas.record import Record  # noqa: E402
from trainer.examples import stage2_examples  # noqa: E402
from trainer.objects import instances_to_segments  # noqa: E402
from trainer.predict import clean_text, load_for_prediction, records_by_scene, stop_ids, until_stop  # noqa: E402
from trainer.shard_reader import iter_scenes, scene_inputs  # noqa: E402


def held_out_scenes(records: Path, split: str) -> set[str]:
    """The scenes with records of `split`, as `p3d predict` reads them."""
    return set(records_by_scene(records, split, None))


def stated_xyz(text: str) -> tuple[float, float, float] | None:
    """The three numbers of an answer "x y z", or None when it starts otherwise."""
    try:
        values = [float(v) for v in text.split()[:3]]
    except ValueError:
        return None
    return (values[0], values[1], values[2]) if len(values) == 3 else None


@dataclass
class Readout:
    asked: int = 0
    # (scene id, segment id) -> the stated x y z, for each answer that states a position
    where: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    segments: dict[str, list[dict]] = field(default_factory=dict)  # scene id -> its segments.json

    @property
    def stated(self) -> np.ndarray:
        """(N, 3) the stated positions, in `where`'s order."""
        return np.array(list(self.where.values()), float).reshape(-1, 3)

    @property
    def truth(self) -> np.ndarray:
        """(N, 3) the box centres of the segments they were asked of, in the same order."""
        segment = {(scene_id, s["id"]): s for scene_id, segs in self.segments.items() for s in segs}
        return np.array([segment[key]["box"]["center"] for key in self.where], float).reshape(-1, 3)


def readout(checkpoint: str, shards: str, scenes: set[str], batch_size: int = 32) -> Readout:
    """The checkpoint's answers to "Where is the <category>?" over `scenes`."""
    model, collate, mode = load_for_prediction(checkpoint)
    stops = stop_ids(model)
    out = Readout()
    for scene in iter_scenes(shards, shuffle=False):
        if scene["scene_id"] not in scenes:
            continue
        out.segments[scene["scene_id"]] = scene["segments"]
        questions = [ex for ex in stage2_examples(scene["scene_id"], scene["segments"], model.cfg.num_obj_tokens,
                                                  random.Random(0), frozenset({"category"}))
                     if ex.task == "object_position"]
        inputs = scene_inputs(scene, mode, model.cfg.num_obj_tokens)
        for start in range(0, len(questions), batch_size):
            chunk = questions[start:start + batch_size]
            batch = collate([(ex, inputs) for ex in chunk], with_answer=False)
            with torch.inference_mode():
                generated = model.generate(batch, max_new_tokens=16)
            for ex, ids in zip(chunk, generated):
                out.asked += 1
                got = stated_xyz(clean_text(model.tokenizer.decode(until_stop(ids, stops))))
                if got is not None:
                    out.where[(scene["scene_id"], ex.meta["segment"])] = np.asarray(got, float)
    return out


def distances_from_positions(read: Readout, records: dict[str, list[Record]]) -> tuple[list[Record], list[float]]:
    """The distance records of the read scenes whose two objects both got a stated position, and for
    each the norm of the difference of those two positions (objects reach segments through the
    matching, `instances_to_segments`, as the trainer's do)."""
    kept, norms = [], []
    for scene_id, segments in read.segments.items():
        segment_of = instances_to_segments(segments)
        for rec in records.get(scene_id, []):
            if rec.task != "distance" or len(rec.target_ids) != 2 or not rec.answers:
                continue
            got = [read.where.get((scene_id, segment_of.get(t, -1))) for t in rec.target_ids]
            if got[0] is not None and got[1] is not None:
                kept.append(rec)
                norms.append(float(np.linalg.norm(got[1] - got[0])))
    return kept, norms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="an exported p3d model folder (any stage)")
    ap.add_argument("--shards", required=True, help="proxy shard folder of the scenes")
    ap.add_argument("--records", required=True, help="annotation records; their split names the held-out scenes")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    records = records_by_scene(Path(args.records), args.split, None)
    read = readout(args.checkpoint, args.shards, set(records))
    stated, truth = read.stated, read.truth
    print(f"{args.checkpoint}: {len(stated)} of {read.asked} answers state a position "
          f"({len(records)} {args.split} scenes)")
    if len(stated) < 2:
        return
    error = np.abs(stated - truth)
    for axis, name in enumerate(("east (x)", "north (y)")):
        corr = np.corrcoef(stated[:, axis], truth[:, axis])[0, 1]
        print(f"  {name:9s} correlation {corr:5.2f}  mean error {error[:, axis].mean():.2f} m  "
              f"spread stated {stated[:, axis].std():.2f} / true {truth[:, axis].std():.2f} m")
    print(f"  within 0.5 m: {np.mean(np.hypot(*(stated - truth)[:, :2].T) < 0.5):.2f}")
    kept, norms = distances_from_positions(read, records)
    total = sum(r.task == "distance" for recs in records.values() for r in recs)
    if kept:
        score = 100.0 * np.mean([mean_relative_accuracy(n, parse_number(r.answers[0])) for r, n in zip(kept, norms)])
        chance = chance_level("distance", kept).get("MRA")
        print(f"  distance from these positions: MRA {score:.1f} (chance {chance:.1f}) on {len(kept)} of "
              f"{total} distance records")


if __name__ == "__main__":
    main()
