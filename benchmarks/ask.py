"""`p3d ask --questions`: many questions about one scene, the scene's prefix encoded once (KV cache,
p3d/ask/answer.py), beside re-encoding the whole prompt for every question, in the same run.

The model is a Proxy3D export on a random-weight Qwen2.5-VL of the toy width (hidden 128, 2 layers,
the demo's) and a wider one (hidden 512, 4 layers), over one scene of K proxies (K = 128, the toy
workflow's budget, and 700, the paper's). Baselines, both greedy to the same answers:
  re-encode, one by one   `Proxy3DModel.generate` per question (what a loop over `p3d ask` does)
  re-encode, batched      the questions in left-padded batches of --batch-size (what `p3d predict` does)
  KV cache                the scene's prefix once, the questions decoded in batches of --batch-size on
                          copies of its cache (what `p3d ask --questions` does); its prefix is counted
Prints the seconds per question (the fastest of --repeats runs), the speed-ups, and whether the KV-cached
answers are those of re-encoding one by one (they must be: tests/test_ask.py asserts it; the weights are
drawn at a trained model's scale so that answers differ per question). Asserts nothing about time.

  python benchmarks/ask.py [--questions 16] [--max-new-tokens 8] [--repeats 3] [--batch-size 8] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the synthetic shards are a test fixture (tests/)

from benchmarks._common import best_of  # noqa: E402

QUESTIONS = ["Find the chair.", "How many lamps are in the room?", "What is <OBJ001>?", "Find all tables.",
             "Which object is the sofa?", "How many chairs are in the room?", "What is <OBJ003>?",
             "Find the red chair."]
WIDTHS = {"toy (hidden 128, 2 layers)": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2),
          "wider (hidden 512, 4 layers)": dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                                                 num_attention_heads=16, num_key_value_heads=4)}  # head_dim 32


def _model(folder: Path, text: dict):
    """A Proxy3D export on a random toy-tokenizer Qwen2.5-VL of the given text widths."""
    from pipeline.toy import models as toy_models
    from trainer.model import Proxy3DModel

    saved = dict(toy_models.TOY_TEXT)
    toy_models.TOY_TEXT.update(text)  # the toy builder's widths, for this build only
    try:
        base = toy_models.build_toy_qwen(folder / "base", QUESTIONS)
    finally:
        toy_models.TOY_TEXT.clear()
        toy_models.TOY_TEXT.update(saved)
    model = Proxy3DModel.build(str(base), feat_dim=128, num_obj_tokens=64, categories=["chair"], height_bins=32,
                               height_range=(0.0, 4.0), fourier_dim=16)
    model.cfg.stages_done = [1, 2, 3, 4]
    return model.export(folder / "model")


def _randomize(model, seed: int = 0) -> None:
    """Weights at a trained model's scale (std 1/sqrt(fan-in)): the untrained build answers every question
    alike, and then "same answers" would say nothing."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.lm.named_parameters():
            if param.dim() == 2 and "visual" not in name:
                param.normal_(0, param.shape[1] ** -0.5)


def _scene(folder: Path, num_proxies: int) -> dict:
    from trainer.shard_reader import iter_scenes
    from tests.synthetic_shards import write_synthetic

    shards, _ = write_synthetic(folder, num_scenes=1, dim=128, proxies_per_object=max(1, num_proxies // 6))
    return next(iter(iter_scenes(shards, shuffle=False)))


def run(num_questions: int, max_new_tokens: int, budgets: list[int], widths: dict, repeats: int,
        batch_size: int) -> None:
    from p3d.ask.answer import PrefixCache, generate_reencoded, load_model
    from trainer.shard_reader import scene_inputs
    from trainer.examples import Example

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(num_questions)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{num_questions} questions, batches of {batch_size}, greedy, {max_new_tokens} new tokens at most, torch threads "
          f"{torch.get_num_threads()}, CPU")
    print(f"{'model':30} {'K':>4} {'prefix':>6} | {'one by one':>11} {'batched':>9} {'KV cache':>9} | "
          f"{'speed-up':>8} {'vs batch':>8} | same answers")
    with tempfile.TemporaryDirectory(prefix="p3d-bench-ask-") as tmp:
        for label, text in widths.items():
            folder = Path(tmp) / label.split()[0]
            model, collate, mode = load_model(_model(folder, text))
            _randomize(model)
            for budget in budgets:
                sample = _scene(folder / f"scene{budget}", budget)
                inputs = scene_inputs(sample, mode, model.cfg.num_obj_tokens)
                scene_id = sample["scene_id"]
                generate_reencoded(model, collate, scene_id, inputs, questions[0], 2)  # warm-up

                def one_by_one():
                    return [generate_reencoded(model, collate, scene_id, inputs, q, max_new_tokens) for q in questions]

                one_s, one = best_of(one_by_one, repeats)
                chunks = [questions[lo:lo + batch_size] for lo in range(0, len(questions), batch_size)]

                def batched():  # collation counted, as the KV path's is
                    with torch.inference_mode():
                        return [model.generate(collate([(Example(scene_id, "ask", q, ""), inputs) for q in chunk],
                                                       with_answer=False), max_new_tokens=max_new_tokens)
                                for chunk in chunks]

                batch_s, _ = best_of(batched, repeats)

                def cached():
                    prefix = PrefixCache(model, collate, scene_id, inputs)  # the prefix's cost is counted
                    return prefix, [ids for chunk in chunks for ids in prefix.generate_batch(chunk, max_new_tokens)]

                kv_s, (prefix, kv) = best_of(cached, repeats)
                print(f"{label:30} {len(sample['xyz']):>4} {prefix.num_prefix:>6} | "
                      f"{one_s / num_questions * 1e3:>9.1f}ms {batch_s / num_questions * 1e3:>7.1f}ms "
                      f"{kv_s / num_questions * 1e3:>7.1f}ms | {one_s / kv_s:>7.2f}x {batch_s / kv_s:>7.2f}x | "
                      f"{'yes' if kv == one else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest is printed")
    parser.add_argument("--batch-size", type=int, default=8, help="questions decoded together (as p3d ask "
                                                                  "and p3d predict do)")
    parser.add_argument("--quick", action="store_true", help="the toy width and K=128 only")
    args = parser.parse_args()
    budgets = [128] if args.quick else [128, 700]
    widths = dict(list(WIDTHS.items())[:1]) if args.quick else WIDTHS
    run(args.questions, args.max_new_tokens, budgets, widths, args.repeats, args.batch_size)


if __name__ == "__main__":
    main()
