"""Shard reader and collation: proxy shards + records -> padded model batches.

Shards stream through WebDataset. Every rank reads a disjoint part of the data: whole shards when
there are at least ranks x workers of them, else every rank reads all shards and keeps the samples
whose position modulo the number of readers is its own (so a job with fewer shards than ranks still
sees each scene exactly once per epoch). Members decode with `np.load(allow_pickle=False)` and
`json.loads`: no pickle anywhere.

A batch holds the prompt tokens in the checkpoint's chat template (trainer/chat.py) with one
`<|image_pad|>` slot per scene token, labels on the answer and its `<|im_end|>` only (-100
elsewhere), attention masks, 3 x B x L rotary position ids (trainer.positions) and the padded scene
tensors with a mask.

Legend: B batch, L tokens, K scene tokens, D feature dim.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from schemas.proxy import FOCUS_MEMBERS, INDEX_FILE, check_proxy_format, check_sample_params, read_set_index
from trainer.chat import IGNORE, chat_layout
from trainer.examples import Example
from trainer.objects import identifier_array
from trainer.positions import quantize_height, rope_position_ids


# ------------------------------------------------------------------ shards
def shard_files(shard_dir: str | Path) -> list[str]:
    """The set's shards, as its index names them; a set without an index (unfinished, or a killed
    re-cluster) or whose index names a missing shard is refused."""
    shard_dir = Path(shard_dir)
    _, scenes = read_set_index(shard_dir)
    if not scenes:
        raise ValueError(f"{shard_dir / INDEX_FILE}: the set holds no scene; run `p3d cluster` again")
    files = sorted({str(shard_dir / name) for name in scenes.values()})
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ValueError(f"{shard_dir / INDEX_FILE} names shards that are not there: {missing}")
    return files


def decode_sample(raw: dict) -> dict:
    """Raw WebDataset members -> arrays and parsed JSON (np.load without pickle)."""
    key = raw["__key__"]
    try:
        check_proxy_format(json.loads(raw["meta.json"]), f"scene {key} in {raw.get('__url__', '?')}")
        scene = {
            "scene_id": key,
            "feat": np.load(io.BytesIO(raw["feat.npy"]), allow_pickle=False),
            "xyz": np.load(io.BytesIO(raw["xyz.npy"]), allow_pickle=False),
            "segment": np.load(io.BytesIO(raw["segment.npy"]), allow_pickle=False),
            "segments": json.loads(raw["segments.json"]),
            "meta": json.loads(raw["meta.json"]),
        }
        for member in FOCUS_MEMBERS if FOCUS_MEMBERS[0] in raw else ():  # Scan2Cap (cluster/caption.py)
            scene[member.removesuffix(".npy")] = np.load(io.BytesIO(raw[member]), allow_pickle=False)
        return scene
    except KeyError as e:
        raise ValueError(f"scene {key} in {raw.get('__url__', '?')}: missing member {e}") from e


def _split(items: list, part: int, parts: int) -> list:
    return items[part::parts]


def iter_scenes(shard_dir: str | Path, *, rank: int = 0, world_size: int = 1, epoch: int = 0, seed: int = 0,
                shuffle: bool = True, worker: int = 0, num_workers: int = 1) -> Iterator[dict]:
    """Decoded scenes of this reader (rank x worker) for one epoch, in a seeded order."""
    import webdataset as wds

    urls = shard_files(shard_dir)
    params, index = read_set_index(shard_dir)
    if shuffle:
        random.Random(seed * 100_003 + epoch).shuffle(urls)
    readers, reader = world_size * num_workers, rank * num_workers + worker
    by_shard = len(urls) >= readers
    mine = _split(urls, reader, readers) if by_shard else urls
    dataset = wds.WebDataset(mine, shardshuffle=False, nodesplitter=None, workersplitter=None,
                             empty_check=False)
    for i, raw in enumerate(dataset):
        if by_shard or i % readers == reader:
            scene = decode_sample(raw)
            where = f"scene {scene['scene_id']} in {raw.get('__url__', '?')}"
            # A sample the index does not list where it was found, or made with other parameters,
            # comes from another run than the index: a mixed set is refused, never trained on.
            if Path(str(raw.get("__url__", ""))).name != index.get(scene["scene_id"]):
                raise ValueError(f"{where}: not where {Path(shard_dir) / INDEX_FILE} puts it; "
                                 "run `p3d cluster` again")
            check_sample_params(scene["meta"].get("params"), params, where, Path(shard_dir) / INDEX_FILE)
            yield scene


def categories_in(shard_dir: str | Path) -> list[str]:
    """Every category named in the shards' segments.json (read before distributed wrapping)."""
    cats: set[str] = set()
    for scene in iter_scenes(shard_dir, shuffle=False):
        cats.update(s["category"] for s in scene["segments"] if s.get("category"))
    return sorted(cats)


# ------------------------------------------------------------------ scene tokens
def scene_form(inputs: dict) -> str:
    """The form of a scene's inputs, the `mode` of `scene_inputs` that made them: "fused" for a
    simplified scene (one token per object, no features), else "proxy". A batch holds one form."""
    return "fused" if inputs["feat"] is None else "proxy"


def scene_inputs(scene: dict, mode: str, num_obj_tokens: int) -> dict:
    """The scene as model inputs: per token xyz, identifier (-1 none), category name, features."""
    segments = scene["segments"]
    ident_of_S = identifier_array(segments, num_obj_tokens)
    if mode == "fused":
        # The simplified scene is one token per object (paper 3.2): the segments matched to a
        # dataset object, which have an identifier and a category. Others (background; a
        # segmenter's masks of walls, floor or object parts, which get identifiers but match no
        # instance) would only add tokens to search through.
        # measured: docs/RESULTS.md#simplified-scene-objects
        objs = [s for s in segments if ident_of_S[s["id"]] >= 0 and s.get("category") is not None]
        xyz_K3 = np.array([s["box"]["center"] for s in objs], np.float32).reshape(-1, 3)
        ident_K = np.array([ident_of_S[s["id"]] for s in objs], np.int64)
        return {"xyz": xyz_K3, "ident": ident_K, "categories": [s.get("category") for s in objs],
                "feat": None}
    segment_K = scene["segment"].astype(np.int64)
    if len(segment_K) and (segment_K.min() < 0 or segment_K.max() >= len(ident_of_S)):
        raise ValueError(f"scene {scene['scene_id']}: segment.npy indexes beyond segments.json")
    return {"xyz": scene["xyz"].astype(np.float32), "ident": ident_of_S[segment_K],
            "categories": None, "feat": scene["feat"].astype(np.float32)}


# ------------------------------------------------------------------ collation
@dataclass
class Collator:
    """Examples (+ their scene inputs) -> one padded batch; the model decides nothing here."""

    tokenizer: object
    cfg: object  # trainer.model.P3DModelConfig
    category_ids: object  # callable: list[str | None] -> list[int]
    max_length: int = 2048
    padding_side: str = "right"
    # (question, answer) -> ChatLayout: rendering and tokenizing per example is slow, and epochs ask
    # the same questions again. measured: docs/RESULTS.md#chat-layout-cache
    _layouts: dict = field(default_factory=dict, repr=False)

    def _layout(self, question: str, answer: str | None):
        key = (question, answer)
        if key not in self._layouts:
            if len(self._layouts) >= 200_000:
                self._layouts.clear()
            self._layouts[key] = chat_layout(self.tokenizer, question, answer, self.cfg.scene_token_id,
                                             self.cfg.chat_end_id)
        return self._layouts[key]

    def encode(self, ex: Example, num_scene: int, z_bin_K: torch.Tensor, with_answer: bool = True):
        """(input ids, labels, 3 x L position ids) of one example in the checkpoint's chat template
        (trainer/chat.py), its one scene slot repeated `num_scene` times."""
        c = self.cfg
        layout = self._layout(ex.question, ex.answer if with_answer else None)
        before, after = layout.prompt[:layout.scene_at], layout.prompt[layout.scene_at + 1:]
        room = self.max_length - len(before) - num_scene - len(after)
        if room < (1 if with_answer else 0):
            raise ValueError(f"scene {ex.scene_id}: {num_scene} scene tokens + prompt exceed "
                             f"max_length {self.max_length}")
        response = layout.response[:room]
        ids = [*before, *[c.scene_token_id] * num_scene, *after, *response]
        labels = [IGNORE] * (len(ids) - len(response)) + response
        pos_3L = rope_position_ids(len(before), z_bin_K, len(after) + len(response), c.height_bins,
                                   c.rope_positions)
        return ids, labels, pos_3L

    def __call__(self, items: list[tuple[Example, dict]], with_answer: bool = True) -> dict:
        c = self.cfg
        if len({scene_form(scene) for _, scene in items}) > 1:
            raise ValueError("a batch mixes simplified scenes and proxies; the stream batches each form "
                             "apart (trainer.rank_stream.StageStream.batches)")
        encoded, scenes = [], []
        for ex, scene in items:
            xyz_K3 = torch.from_numpy(scene["xyz"])
            z_bin_K = quantize_height(xyz_K3[:, 2], tuple(c.height_range), c.height_bins)
            encoded.append(self.encode(ex, len(xyz_K3), z_bin_K, with_answer))
            scenes.append(scene)
        B, L = len(items), max(len(e[0]) for e in encoded)
        K = max(len(s["xyz"]) for s in scenes)
        input_ids = torch.full((B, L), c.pad_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        position_ids = torch.zeros((3, B, L), dtype=torch.long)
        scene_mask = torch.zeros((B, K), dtype=torch.bool)
        scene_xyz = torch.zeros((B, K, 3))
        scene_ident = torch.full((B, K), -1, dtype=torch.long)
        scene_sem = torch.zeros((B, K), dtype=torch.long)
        fused = scene_form(scenes[0]) == "fused"
        scene_feat = None if fused else torch.zeros((B, K, scenes[0]["feat"].shape[1]))
        for b, ((ids, lab, pos_3L), scene) in enumerate(zip(encoded, scenes)):
            n, k = len(ids), len(scene["xyz"])
            sl = slice(L - n, L) if self.padding_side == "left" else slice(0, n)
            input_ids[b, sl] = torch.tensor(ids)
            labels[b, sl] = torch.tensor(lab)
            attention[b, sl] = 1
            position_ids[:, b, sl] = pos_3L
            scene_mask[b, :k] = True
            scene_xyz[b, :k] = torch.from_numpy(np.nan_to_num(scene["xyz"]))
            scene_ident[b, :k] = torch.from_numpy(scene["ident"])
            if fused:
                scene_sem[b, :k] = torch.tensor(self.category_ids(scene["categories"]), dtype=torch.long)
            else:
                scene_feat[b, :k] = torch.from_numpy(scene["feat"])
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention,
                "position_ids": position_ids, "scene_mask": scene_mask, "scene_xyz": scene_xyz,
                "scene_ident": scene_ident, "scene_sem": scene_sem, "scene_feat": scene_feat}
