"""Small synthetic proxy shards and records, in exactly the cluster stage's format.

For tests and benchmarks of the trainer, which must not depend on the features and cluster stages
(a test fixture: the real path never imports it): each scene has a few boxes of known categories; a
box's proxies carry its category's prototype feature plus noise, and positions inside the box.
Records follow the toy world's templates. Shards go through the cluster stage's own writer
(`pipeline.cluster.shards.write_shard`), so they are deterministic and written atomically like real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cluster.shards import json_bytes, npy_bytes, proxies_dir, write_shard
from schemas.io import write_json_atomic
from schemas.proxy import INDEX_FILE, SHARD_PATTERN, ProxyMeta, SegmentInfo, index_payload
from schemas.record import Record, write_records

CATEGORIES = ("chair", "table", "lamp", "sofa", "bed", "plant")
FEATURE_RMS = 0.05

SYNTHETIC_PARAMS = {"synthetic": True}  # meta.json params, and the index's


def make_scene(scene_id: str, rng: np.random.Generator, dim: int, proxies_per_object: int = 8,
               num_objects: tuple[int, int] = (3, 7), background_segments: int = 0):
    """One scene: (sample members dict, list of (instance id, category, box min, box max)).

    `background_segments` adds unlabeled segments (label -1, no category, random features) like the
    toy world's wall and floor cells, interleaved with the objects in the segment order."""
    # Scale of a vision tower's outputs (~0.05 RMS for the toy Qwen2.5-VL), like the real features.
    prototypes = FEATURE_RMS * np.random.default_rng(1234).normal(size=(len(CATEGORIES), dim)).astype(np.float32)
    n = int(rng.integers(*num_objects))
    objects = []
    for inst in range(n):
        cat = int(rng.integers(len(CATEGORIES)))
        lo = np.array([rng.uniform(0, 4), rng.uniform(0, 4), rng.uniform(0, 1.5)])
        objects.append((inst + 1, CATEGORIES[cat], cat, lo, lo + rng.uniform(0.3, 1.2, 3)))
    background = []
    for _ in range(background_segments):
        lo = np.array([rng.uniform(0, 4), rng.uniform(0, 4), 0.0])
        background.append((-1, None, -1, lo, lo + np.array([1.0, 1.0, 0.1])))
    # Segment order stands in for BFS: nearest box centre to the origin first.
    segments = sorted(objects + background, key=lambda o: float(np.linalg.norm((o[3] + o[4]) / 2)))
    feats, xyzs, segs, infos = [], [], [], []
    for seg_id, (inst, name, cat, lo, hi) in enumerate(segments):
        xyz = rng.uniform(lo, hi, size=(proxies_per_object, 3)).astype(np.float32)
        base = prototypes[cat] if cat >= 0 else FEATURE_RMS * rng.normal(size=dim)
        feats.append(base + 0.3 * FEATURE_RMS * rng.normal(size=(proxies_per_object, dim)))
        xyzs.append(xyz)
        segs.append(np.full(proxies_per_object, seg_id, np.int32))
        # The synthetic segmenter is the oracle: a segment's label is its instance, matched at IoU 1.
        infos.append(SegmentInfo(id=seg_id, label=inst, instance_id=inst if inst >= 0 else None,
                                 match_iou=1.0 if inst >= 0 else None, category=name, size=proxies_per_object * 4,
                                 proxies=proxies_per_object, center=((lo + hi) / 2).tolist(),
                                 box={"center": ((lo + hi) / 2).tolist(), "size": (hi - lo).tolist()},
                                 bfs_rank=seg_id).model_dump())
    k = proxies_per_object * len(segments)
    meta = ProxyMeta(scene_id=scene_id, num_proxies=k, budget=k, dim=dim, num_valid_triplets=4 * k,
                     params=SYNTHETIC_PARAMS, source={"kind": "synthetic"}).model_dump()
    sample = {"__key__": scene_id, "feat.npy": npy_bytes(np.concatenate(feats).astype(np.float16)),
              "xyz.npy": npy_bytes(np.concatenate(xyzs)), "segment.npy": npy_bytes(np.concatenate(segs)),
              "segments.json": json_bytes(infos), "meta.json": json_bytes(meta)}
    return sample, [(inst, name, lo, hi) for inst, name, _, lo, hi in segments if inst >= 0]


def scene_records(scene_id: str, objects, split: str) -> list[Record]:
    recs: list[Record] = []

    def add(task, question, answers, targets, **kw):
        recs.append(Record(id=f"{scene_id}-{len(recs):03d}", scene_id=scene_id, task=task, source="synthetic",
                           question=question, answers=answers, target_ids=targets, split=split, **kw))

    by_cat: dict[str, list[int]] = {}
    for inst, name, _, _ in objects:
        add("object_name", "What is <OBJ>?", [name], [inst])
        by_cat.setdefault(name, []).append(inst)
    for name in CATEGORIES:
        members = by_cat.get(name, [])
        add("counting", f"How many {name}s are in the room?", [str(len(members))], members, answer_type="number")
        if len(members) == 1:
            add("grounding", f"Find the {name}.", [], members, answer_type="objects")
    return recs


def write_synthetic(out: str | Path, num_scenes: int = 6, dim: int = 128, scenes_per_shard: int = 2,
                    proxies_per_object: int = 8, val_every: int = 3, seed: int = 0,
                    background_segments: int = 0) -> tuple[Path, Path]:
    """Write `<out>/proxies/synthetic/shard-*.tar` + index.json and `<out>/records.jsonl`."""
    out = Path(out)
    shard_dir = proxies_dir(out, "synthetic")
    shard_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index: dict[str, str] = {}
    records: list[Record] = []
    samples: list[dict[str, bytes]] = []
    for i in range(num_scenes):
        scene_id = f"scene{i:04d}"
        sample, objects = make_scene(scene_id, rng, dim, proxies_per_object,
                                     background_segments=background_segments)
        samples.append(sample)
        index[scene_id] = SHARD_PATTERN % (i // scenes_per_shard)
        records += scene_records(scene_id, objects, "val" if val_every and i % val_every == val_every - 1
                                 else "train")
    for start in range(0, num_scenes, scenes_per_shard):
        shard = shard_dir / (SHARD_PATTERN % (start // scenes_per_shard))
        write_shard(shard, samples[start:start + scenes_per_shard])
    write_json_atomic(shard_dir / INDEX_FILE, index_payload(SYNTHETIC_PARAMS, index))
    write_records(records, out / "records.jsonl")
    return shard_dir, out / "records.jsonl"


def untrained_model(root: str | Path, texts: list[str], num_scenes: int = 6) -> tuple[Path, Path, Path, Path]:
    """(exported untrained Proxy3D folder, its toy Qwen folder, synthetic shards, records) under
    `root`: a tiny random-weight model whose vocabulary covers `texts`, seeded, 32 identifiers."""
    import torch

    from pipeline.toy.models import build_toy_qwen
    from trainer.model import Proxy3DModel

    root = Path(root)
    qwen = build_toy_qwen(root / "qwen", texts)
    shards, records = write_synthetic(root / "data", num_scenes=num_scenes, dim=128, scenes_per_shard=2)
    torch.manual_seed(0)
    model = Proxy3DModel.build(str(qwen), feat_dim=128, num_obj_tokens=32, categories=list(CATEGORIES),
                               height_bins=16, height_range=(-0.5, 3.5), fourier_dim=16)
    return model.export(root / "model"), qwen, shards, records
