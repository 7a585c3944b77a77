"""Position readout of a trained checkpoint: how well it states where objects are on held-out scenes.

Asks "Where is the <category>?" of every object alone in its category in each held-out scene (the
stage-2 question `train.position_names: [category]` trains, trainer/examples.py `stage2_examples`),
on the scene form the checkpoint reads (simplified scene after stages 1-3, proxies after stage 4;
trainer/predict.py `load_for_prediction`), greedy, and compares the stated east / north coordinates
with the segments' box centres: correlation, mean absolute error and spread per axis, and the share
within 0.5 m. This tells a model that reads both floor axes from one that reads one of them
(docs/RESULTS.md#toy-spatial-seeds). Asserts nothing.

  python benchmarks/position_readout.py runs/toy-spatial/train/stage2/model \
      --shards data/toy/proxies/default --records data/toy/annotations.jsonl [--split val]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.examples import stage2_examples  # noqa: E402
from trainer.predict import clean_text, load_for_prediction, records_by_scene, stop_ids, until_stop  # noqa: E402
from trainer.shard_reader import iter_scenes, scene_inputs  # noqa: E402


def held_out_scenes(records: Path, split: str) -> set[str]:
    """The scenes with records of `split`, as `p3d predict` reads them."""
    return set(records_by_scene(records, split, None))


def stated_xy(text: str) -> tuple[float, float] | None:
    """The first two numbers of an answer "x y z", or None when it has fewer."""
    try:
        values = [float(v) for v in text.split()[:2]]
    except ValueError:
        return None
    return (values[0], values[1]) if len(values) == 2 else None


def readout(checkpoint: str, shards: str, scenes: set[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, int]:
    """(stated xy (N, 2), true xy (N, 2), questions asked) over `scenes`."""
    model, collate, mode = load_for_prediction(checkpoint)
    stops = stop_ids(model)
    stated, truth, asked = [], [], 0
    for scene in iter_scenes(shards, shuffle=False):
        if scene["scene_id"] not in scenes:
            continue
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
                asked += 1
                got = stated_xy(clean_text(model.tokenizer.decode(until_stop(ids, stops))))
                if got is not None:
                    stated.append(got)
                    truth.append(stated_xy(ex.answer))
    return np.asarray(stated, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2), asked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="an exported p3d model folder (any stage)")
    ap.add_argument("--shards", required=True, help="proxy shard folder of the scenes")
    ap.add_argument("--records", required=True, help="annotation records; their split names the held-out scenes")
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    scenes = held_out_scenes(Path(args.records), args.split)
    stated, truth, asked = readout(args.checkpoint, args.shards, scenes)
    print(f"{args.checkpoint}: {len(stated)} of {asked} answers state a position "
          f"({len(scenes)} {args.split} scenes)")
    if len(stated) < 2:
        return
    error = np.abs(stated - truth)
    for axis, name in enumerate(("east (x)", "north (y)")):
        corr = np.corrcoef(stated[:, axis], truth[:, axis])[0, 1]
        print(f"  {name:9s} correlation {corr:5.2f}  mean error {error[:, axis].mean():.2f} m  "
              f"spread stated {stated[:, axis].std():.2f} / true {truth[:, axis].std():.2f} m")
    print(f"  within 0.5 m: {np.mean(np.hypot(*(stated - truth).T) < 0.5):.2f}")


if __name__ == "__main__":
    main()
