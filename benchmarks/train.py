"""Training step cost: 700 proxies vs the full patch sequence of the same scene, and ZeRO-2 vs ZeRO-3.

    python benchmarks/train.py [--model FOLDER] [--frames 32 --image 480 640] [--steps 5]

The last row is the step with the loss through every position's logits (Hugging Face's own loss),
the baseline of the trainer's answer-only logits (`Proxy3DModel.forward`).

Each configuration runs in its own process (clean peak-memory figures): a forward + backward +
optimizer step of the Proxy3D model on one scene whose vision part is either K = 700 proxies or all
F x (H/28) x (W/28) patch tokens of the frames the proxies were clustered from (what a
pixel-aligned 3D-VLM would feed). Peak memory is the process's peak RSS growth during the steps on
CPU (over the resident size before the first step), `torch.cuda.max_memory_allocated` on a GPU. ZeRO-2 / ZeRO-3 rows go through DeepSpeed
(one process here; the partitioning gains need several ranks, the overhead shows with one).
Without --model a tiny random-weight Qwen2.5-VL is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import (bench_batch, bench_model, current_rss_mb, make_train_step,  # noqa: E402
                                rss_peak_mb, run_child, step_seconds)


def child(spec: dict) -> dict:
    """One configuration's steps in this process, on random proxy features."""
    from trainer import env

    env.setup_environment()
    import numpy as np
    import torch

    on_gpu = torch.cuda.is_available()
    model = bench_model(spec["model"], spec["dim"])
    params = model.set_trainable(["projector", "position", "language_model"])
    model.lm.config.use_cache = False
    rng = np.random.default_rng(0)
    k = spec["tokens"]
    batch = bench_batch(model, rng.normal(size=(k, spec["dim"])).astype(np.float16),
                        rng.uniform(0, 4, size=(k, 3)).astype(np.float32), spec["batch"])
    step = make_train_step(model, params, batch, spec["engine"], spec["batch"], on_gpu,
                           full_logits=spec.get("full_logits", False))
    # Few identifiers: their glyph encoding must not set the process's peak before the steps do.
    rss0 = current_rss_mb()
    times = step_seconds(step, spec["steps"], on_gpu)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else rss_peak_mb() - rss0
    return {"seq_len": int(batch["input_ids"].shape[1]), "step_s": float(np.median(times)), "peak_mb": peak,
            "peak_kind": "cuda max allocated" if on_gpu else "RSS growth"}


def run(spec: dict) -> dict:
    return run_child(__file__, spec, omp_threads="2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="Qwen2.5-VL folder or hub id; default: a tiny random-weight one")
    p.add_argument("--frames", type=int, default=16, help="the paper: 32 frames")
    p.add_argument("--image", type=int, nargs=2, default=(336, 448), metavar=("H", "W"))
    p.add_argument("--proxies", type=int, default=700)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from pipeline.toy.models import build_toy_qwen

            model = str(build_toy_qwen(Path(tmp) / "qwen", ["How many chairs are in the room?"]))
        from transformers import AutoConfig

        dim = AutoConfig.from_pretrained(model).text_config.hidden_size
        patches = args.frames * (args.image[0] // 28) * (args.image[1] // 28)
        base = {"model": model, "dim": dim, "batch": args.batch, "steps": args.steps}
        rows = [("proxies", args.proxies, "torch"), ("all patches", patches, "torch"),
                ("proxies", args.proxies, "zero2"), ("proxies", args.proxies, "zero3"),
                ("proxies, all logits", args.proxies, "torch")]
        print(f"model {model} (hidden {dim}); scene: {args.frames} frames of {args.image[0]}x{args.image[1]} "
              f"-> {patches} patch tokens vs {args.proxies} proxies; batch {args.batch}")
        print(f"{'vision tokens':>26} {'engine':>7} {'seq len':>8} {'step s':>8} {'peak MB':>9}")
        results = {}
        for name, tokens, engine in rows:
            r = run(dict(base, tokens=tokens, engine=engine, full_logits="all logits" in name))
            results[(name, engine)] = r
            print(f"{name + f' ({tokens})':>26} {engine:>7} {r['seq_len']:>8} {r['step_s']:>8.3f} "
                  f"{r['peak_mb']:>9.1f}  ({r['peak_kind']})")
        prox, full = results[("proxies", "torch")], results[("all patches", "torch")]
        print(f"proxies vs all patches: {full['step_s'] / prox['step_s']:.1f}x faster step, "
              f"{full['seq_len'] / prox['seq_len']:.1f}x shorter sequence")
        every = results[("proxies, all logits", "torch")]
        print(f"logits of the answer only vs every position (the baseline): "
              f"{every['step_s'] / prox['step_s']:.2f}x faster step")


if __name__ == "__main__":
    main()
