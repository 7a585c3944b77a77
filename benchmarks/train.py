"""Training step cost: 700 proxies vs the full patch sequence of the same scene, and ZeRO-2 vs ZeRO-3.

    python benchmarks/train.py [--model FOLDER] [--frames 32 --image 480 640] [--steps 5]

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
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(spec: dict) -> dict:
    from trainer import env

    env.setup_environment()
    import numpy as np
    import torch

    from trainer.shard_reader import Collator, scene_inputs
    from trainer.model import Proxy3DModel
    from trainer.examples import Example

    torch.manual_seed(0)
    on_gpu = torch.cuda.is_available()
    model = Proxy3DModel.build(spec["model"], feat_dim=spec["dim"], num_obj_tokens=8, categories=["chair"],
                               height_bins=64, height_range=(-0.5, 3.5), fourier_dim=64)
    params = model.set_trainable(["projector", "position", "language_model"])
    model.lm.config.use_cache = False
    rng = np.random.default_rng(0)
    k = spec["tokens"]
    scene = {"scene_id": "bench", "feat": rng.normal(size=(k, spec["dim"])).astype(np.float16),
             "xyz": rng.uniform(0, 4, size=(k, 3)).astype(np.float32),
             "segment": (np.arange(k) * 50 // k).astype(np.int32),
             "segments": [{"id": i, "label": i, "category": "chair"} for i in range(50)]}
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=10**9)
    items = [(Example("bench", "qa", "How many chairs are in the room?", "3"),
              scene_inputs(scene, "proxy", 8))] * spec["batch"]
    batch = collate(items)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    if spec["engine"] == "torch":
        device = torch.device("cuda" if on_gpu else "cpu")
        runner = model.to(device)

        def step():
            loss = runner({k_: (v.to(device) if v is not None else None) for k_, v in batch.items()}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        import deepspeed

        from trainer.train import deepspeed_config

        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                          config=deepspeed_config(spec["engine"], spec["batch"], 1, 1, on_gpu))
        device = engine.device

        def step():
            loss = engine({k_: (v.to(device) if v is not None else None) for k_, v in batch.items()}).loss
            engine.backward(loss)
            engine.step()

    # Few identifiers: their glyph encoding must not set the process's peak before the steps do.
    rss0 = _current_rss_mb()
    step()  # warm-up: allocator, kernels, DeepSpeed buckets (its memory counts in the peak)
    if on_gpu:
        torch.cuda.synchronize()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        step()
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else _peak_rss_mb() - rss0
    return {"seq_len": int(batch["input_ids"].shape[1]), "step_s": float(np.median(times)), "peak_mb": peak,
            "peak_kind": "cuda max allocated" if on_gpu else "RSS growth"}


def run(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


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
                ("proxies", args.proxies, "zero2"), ("proxies", args.proxies, "zero3")]
        print(f"model {model} (hidden {dim}); scene: {args.frames} frames of {args.image[0]}x{args.image[1]} "
              f"-> {patches} patch tokens vs {args.proxies} proxies; batch {args.batch}")
        print(f"{'vision tokens':>22} {'engine':>7} {'seq len':>8} {'step s':>8} {'peak MB':>9}")
        results = {}
        for name, tokens, engine in rows:
            r = run(dict(base, tokens=tokens, engine=engine))
            results[(name, engine)] = r
            print(f"{name + f' ({tokens})':>22} {engine:>7} {r['seq_len']:>8} {r['step_s']:>8.3f} "
                  f"{r['peak_mb']:>9.1f}  ({r['peak_kind']})")
        prox, full = results[("proxies", "torch")], results[("all patches", "torch")]
        print(f"proxies vs all patches: {full['step_s'] / prox['step_s']:.1f}x faster step, "
              f"{full['seq_len'] / prox['seq_len']:.1f}x shorter sequence")


if __name__ == "__main__":
    main()
