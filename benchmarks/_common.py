"""What the benchmarks share: best-of timing, the process's resident memory, and one training step of
the Proxy3D model (torch or DeepSpeed) measured in a fresh child process.

The scripts run as `python benchmarks/NAME.py`; each puts the repository root on `sys.path` before it
imports this module as `benchmarks._common` (tests import the scripts the same way).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The launcher's variables would make a child join (or wait for) a process group that is not there.
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(fastest of `repeats` wall times, the last result): a shared machine's noise only ever adds time."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_rss_peak() -> None:
    """Start the peak over from now (Linux: `5` to clear_refs resets VmHWM). Without it the peak is
    the process's lifetime one, which the imports can set before the model exists
    (measured: docs/RESULTS.md#bench-scale-rss-reset)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_peak_mb() -> float:
    """The resident high-water mark since the last `reset_rss_peak` (the lifetime one where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, spec: dict, omp_threads: str, cwd: Path | None = None) -> dict:
    """`python SCRIPT --child SPEC` in a process of its own (clean peak-memory figures), outside any
    launcher's process group; the last JSON line it prints is its result."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", omp_threads))
    for name in _RANK_VARIABLES:
        env.pop(name, None)
    out = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True, check=False, cwd=cwd)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"benchmark child {Path(script).name} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def bench_model(model_folder: str, feat_dim: int):
    """The Proxy3D model the training benchmarks step: one category, the toy workflow's position encoding."""
    import torch

    from trainer.model import Proxy3DModel

    torch.manual_seed(0)
    return Proxy3DModel.build(model_folder, feat_dim=feat_dim, num_obj_tokens=8, categories=["chair"],
                              height_bins=64, height_range=(-0.5, 3.5), fourier_dim=64)


def bench_batch(model, feat_KD, xyz_K3, batch_size: int) -> dict:
    """One counting question on a scene of K proxies in 50 segments, `batch_size` copies collated."""
    import numpy as np

    from trainer.examples import Example
    from trainer.shard_reader import Collator, scene_inputs

    k = len(feat_KD)
    scene = {"scene_id": "bench", "feat": feat_KD, "xyz": xyz_K3, "segment": (np.arange(k) * 50 // k).astype(np.int32),
             "segments": [{"id": i, "label": i, "category": "chair"} for i in range(50)]}
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=10**9)
    return collate([(Example("bench", "qa", "How many chairs are in the room?", "3"),
                     scene_inputs(scene, "proxy", 8))] * batch_size)


def full_vocabulary_loss(model):
    """The baseline of the answer-only logits (`Proxy3DModel.forward`): Hugging Face's own loss, which
    projects every position onto the vocabulary."""
    def run(batch: dict):
        return model.lm(inputs_embeds=model.input_embeddings(batch), attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
    return run


def make_train_step(model, params, batch: dict, engine: str, micro_batch: int, on_gpu: bool,
                    full_logits: bool = False):
    """A closure running one forward + backward + optimizer step on `batch`: plain torch AdamW
    (`engine` "torch") or DeepSpeed with the trainer's own config (`engine` "zero2" / "zero3").
    `full_logits` (torch only): the loss through every position's logits, the baseline."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=1e-5)
    if engine == "torch":
        device = torch.device("cuda" if on_gpu else "cpu")
        model.to(device)
        runner = full_vocabulary_loss(model) if full_logits else model

        def step():
            runner({k: (v.to(device) if v is not None else None) for k, v in batch.items()}).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return step
    import deepspeed

    from trainer.train import deepspeed_config

    from trainer import env

    env.init_distributed(on_gpu)
    ds_engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                         config=deepspeed_config(engine, micro_batch, 1, 1, on_gpu))

    def step():
        loss = ds_engine({k: (v.to(ds_engine.device) if v is not None else None) for k, v in batch.items()}).loss
        ds_engine.backward(loss)
        ds_engine.step()
    return step


def step_seconds(step, steps: int, on_gpu: bool) -> list[float]:
    """Seconds of each of `steps` calls after one warm-up call (allocator, kernels, DeepSpeed buckets:
    untimed, but its memory counts in any peak measured around this)."""
    import torch

    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        step()
        if on_gpu:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return times
