"""Loader throughput (shards -> examples -> collated batches) beside the trainer's consumption.

    python benchmarks/loader.py [--shards DIR --records FILE] [--stage 4] [--batch 8] [--model FOLDER]

Without --shards, synthetic shards in the cluster stage's format are written to a temporary folder.
The loader figure is samples/s of `StageStream.batches` + `Collator` in this process; the trainer's
figure is samples/s of forward + backward + AdamW steps of the Proxy3D model (language model
trainable) on batches from the same stream. The loader keeps up when its figure is well above the
trainer's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards")
    p.add_argument("--records")
    p.add_argument("--model", help="Qwen2.5-VL folder; default: a tiny random-weight one")
    p.add_argument("--stage", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--train-steps", type=int, default=10)
    args = p.parse_args()

    import torch

    from schemas.record import load_records
    from trainer.model import Proxy3DModel
    from trainer.rank_stream import StageStream
    from trainer.shard_reader import Collator

    with tempfile.TemporaryDirectory() as tmp:
        shards, records = args.shards, args.records
        if shards is None:
            from tests.synthetic_shards import write_synthetic

            shards, records = write_synthetic(Path(tmp) / "data", num_scenes=40, dim=128, scenes_per_shard=8,
                                              proxies_per_object=100)
        model_dir = args.model
        if model_dir is None:
            from pipeline.toy.models import build_toy_qwen

            model_dir = str(build_toy_qwen(Path(tmp) / "qwen", ["How many chairs are in the room?"]))
        by_scene = defaultdict(list)
        for r in load_records(records) if records else []:
            by_scene[r.scene_id].append(r)
        stream = StageStream(shards, args.stage, by_scene, 200, args.batch)
        from trainer.shard_reader import iter_scenes

        dim = int(next(iter_scenes(shards, shuffle=False))["feat"].shape[1])
        torch.manual_seed(0)
        model = Proxy3DModel.build(model_dir, feat_dim=dim, num_obj_tokens=200,
                                   categories=["chair", "table", "lamp", "sofa", "bed", "plant"],
                                   height_bins=64, height_range=(-0.5, 3.5), fourier_dim=64)
        collate = Collator(model.tokenizer, model.cfg, model.category_ids)

        load_s, samples, tokens, kept = _time_loader(stream, collate, args.batches, args.train_steps)
        train_s, train_samples = _time_training(model, kept)

    print(f"stage {args.stage}, batch {args.batch}, {samples} samples ({tokens / samples:.0f} tokens each)")
    print(f"{'loader (shards -> batches)':>32}: {samples / load_s:10.1f} samples/s")
    print(f"{'trainer (fwd + bwd + step)':>32}: {train_samples / train_s:10.1f} samples/s")
    print(f"loader / trainer: {(samples / load_s) / (train_samples / train_s):.1f}x")


def _time_loader(stream, collate, num_batches: int, keep: int) -> tuple[float, int, int, list[dict]]:
    """(seconds, samples, tokens, the first `keep` batches) of reading and collating `num_batches` batches."""
    t0, samples, tokens = time.perf_counter(), 0, 0
    kept = []
    for i, items in enumerate(stream.batches(0, num_batches)):
        batch = collate(items)
        samples += len(items)
        tokens += int(batch["attention_mask"].sum())
        if i < keep:
            kept.append(batch)
    return time.perf_counter() - t0, samples, tokens, kept


def _time_training(model, batches: list[dict]) -> tuple[float, int]:
    """(seconds, samples) of forward + backward + AdamW steps over `batches`, after one warm-up pass."""
    import torch

    params = model.set_trainable(["projector", "position", "language_model"])
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    model(batches[0]).loss.backward()  # warm-up
    optimizer.zero_grad()
    t0, samples = time.perf_counter(), 0
    for batch in batches:
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        samples += int(batch["input_ids"].shape[0])
    return time.perf_counter() - t0, samples


if __name__ == "__main__":
    main()
