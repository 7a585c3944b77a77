"""Per-rank stream of training batches for one stage: shards -> scenes -> examples -> micro-batches.

Every rank walks its own part of the shards (trainer.shard_reader.iter_scenes). Ranks can hold different
numbers of examples, but DeepSpeed needs every rank to take the same number of steps; so the epoch
length is the longest rank's count of micro-batches (agreed once with an all-reduce) and a rank that
runs out starts its part again. Every example is seen at least once per epoch, and the order is a
pure function of (seed, epoch, rank): `--resume` replays an epoch and skips what was consumed.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.cluster.caption import captioned_segment, focus_scene
from schemas import plugins
from schemas.proxy import read_set_index
from schemas.record import Record
from trainer.examples import (POSITION_BY_IDENTIFIER, STAGE_MODES, Example, build_examples,
                              sample_per_task, split_listed_answer)
from trainer.objects import OBJ_TOKEN_RE, obj_token
from trainer.shard_reader import iter_scenes, scene_form, scene_inputs

Item = tuple[Example, dict]
# The one room generator there is; a registry name, so the trainer never imports the toy world.
LAYOUT_GENERATOR = "toy_layout"
OBJECT_LIST_RE = re.compile(rf"{OBJ_TOKEN_RE.pattern}( {OBJ_TOKEN_RE.pattern})*")


def permute_identifiers(examples: list[Example], inputs: dict, num_obj_tokens: int,
                        rng: random.Random) -> list[Item]:
    """Rename the scene's objects with a random permutation of the identifiers, in the scene tokens
    and in every question and answer alike.

    Identifiers are arbitrary names. With fixed names, a small model fits the training scenes by
    memorizing (scene, identifier) -> answer instead of reading the scene tokens, and then fails on
    unseen scenes. Fresh names per scene and epoch leave nothing to memorize
    (measured: docs/RESULTS.md#identifier-renaming). The toy workflow renames
    in stage 1 as well, where the category -> identifier lookup must be learned as a lookup
    (`shuffle_identifiers` per stage; workflows/toy.yaml).
    """
    ident = inputs["ident"]
    # Permute among the names the scene uses (0..n-1: identifiers are dense, trainer.objects), so
    # that names stay as frequent as without renaming; other names map to themselves.
    used = max([int(ident.max(initial=-1)) + 1, *(_max_named(ex) + 1 for ex in examples)])
    perm = np.arange(num_obj_tokens, dtype=np.int64)
    perm[:used] = rng.sample(range(used), used)
    renamed = dict(inputs, ident=np.where(ident >= 0, perm[np.clip(ident, 0, None)], -1))

    def rename(text: str) -> str:
        return OBJ_TOKEN_RE.sub(lambda m: obj_token(int(perm[int(m.group(1))])), text)

    def rename_answer(text: str) -> str:
        # An answer that lists objects lists them in identifier order (trainer.examples); keep it so,
        # else the order after renaming is random and the first token of a several-object answer
        # cannot be predicted.
        parts = split_listed_answer(text)
        if parts is not None and parts[0]:  # a listed count: the list first, then the count
            return f"{rename_answer(parts[0])}: {parts[1]}"
        if OBJECT_LIST_RE.fullmatch(text):
            return " ".join(obj_token(i) for i in sorted(int(perm[int(n)]) for n in OBJ_TOKEN_RE.findall(text)))
        return rename(text)

    return [(replace(ex, question=rename(ex.question), answer=rename_answer(ex.answer)), renamed)
            for ex in examples]


def _max_named(ex: Example) -> int:
    return max((int(m.group(1)) for m in OBJ_TOKEN_RE.finditer(ex.question + " " + ex.answer)), default=-1)


class StageStream:
    def __init__(self, shard_dir: str | Path, stage: int, records_by_scene: dict[str, list[Record]],
                 num_obj_tokens: int, batch_size: int, *, seed: int = 0, shuffle_scenes: int = 16,
                 rank: int = 0, world_size: int = 1, exclude_scenes: frozenset[str] = frozenset(),
                 shuffle_identifiers: bool = False, tasks: list[str] | None = None,
                 record_tasks: list[str] | None = None, count_by_listing: bool = False,
                 replay_tasks: list[str] | None = None, replay_per_task: int = 1,
                 answer_steps: list[str] | None = None, layout_rooms: int = 0,
                 position_names: list[str] | None = None, layout_tasks: list[str] | None = None,
                 layout_per_task: dict[str, int] | None = None):
        self.answer_steps = frozenset(answer_steps or ())
        self.position_names = frozenset(position_names) if position_names else POSITION_BY_IDENTIFIER
        self.layout_rooms = layout_rooms
        self.layout_tasks = frozenset(layout_tasks) if layout_tasks else None
        self.layout_per_task = dict(layout_per_task or {})
        self._layout_cache: list[tuple[dict, list[Record]]] | None = None
        self.tasks = frozenset(tasks) if tasks else None
        self.replay_tasks, self.replay_per_task = frozenset(replay_tasks or ()), replay_per_task
        self.count_by_listing = count_by_listing
        self.record_tasks = frozenset(record_tasks or ())
        self.shard_dir, self.stage, self.records_by_scene = shard_dir, stage, records_by_scene
        self.shuffle_identifiers = shuffle_identifiers
        self.exclude_scenes = exclude_scenes
        self.num_obj_tokens, self.batch_size, self.seed = num_obj_tokens, batch_size, seed
        self.shuffle_scenes, self.rank, self.world_size = shuffle_scenes, rank, world_size
        self.mode = STAGE_MODES[stage]
        # (task, reason) -> records of this rank that could not be examples, tallied by
        # `examples_per_form()`
        # (trainer.examples.stage4_examples); the trainer reports them per task.
        self.skipped: Counter = Counter()

    def _examples(self, scene: dict, epoch: int, skipped: Counter | None = None,
                  records: list[Record] | None = None) -> list[Item]:
        rng = random.Random(f"{self.seed}-{epoch}-{scene['scene_id']}")
        generated = records is not None
        if not generated:
            records = self.records_by_scene.get(scene["scene_id"], [])
        examples = build_examples(self.stage, scene["scene_id"], scene["segments"], records,
                                  self.num_obj_tokens, rng, tasks=self.tasks, record_tasks=self.record_tasks,
                                  count_by_listing=self.count_by_listing, skipped=skipped,
                                  replay_tasks=self.replay_tasks, replay_per_task=self.replay_per_task,
                                  answer_steps=self.answer_steps, position_names=self.position_names)
        if generated and self.layout_tasks is not None:
            examples = [ex for ex in examples if ex.task in self.layout_tasks]
        if generated and self.layout_per_task:
            examples = sample_per_task(examples, rng, self.layout_per_task)
        if not examples:
            return []
        mode = "fused" if generated else self.mode  # a generated room has boxes only, whatever the stage
        # A caption example sees its object's Scan2Cap focus block (pipeline/cluster/caption.py);
        # without focus blocks every example is in the one group None, the scene's own sequence.
        focus = mode == "proxy" and "focus_segment" in scene
        groups: dict[int | None, list[Example]] = {}
        for ex in examples:
            groups.setdefault(captioned_segment(ex) if focus else None, []).append(ex)
        items: list[Item] = []
        for segment, group in groups.items():
            inputs = scene_inputs(focus_scene(scene, segment), mode, self.num_obj_tokens)
            if self.shuffle_identifiers:
                items += permute_identifiers(group, inputs, self.num_obj_tokens, rng)
            else:
                items += [(ex, inputs) for ex in group]
        return items

    def _layout_rooms(self) -> list[tuple[dict, list[Record]]]:
        """This rank's generated rooms (the `toy_layout` room generator of schemas/plugins.py), made once."""
        if self._layout_cache is None:
            layout_room = plugins.load(plugins.ROOM_GENERATORS, LAYOUT_GENERATOR)
            self._layout_cache = [layout_room(self.seed, k)
                                  for k in range(self.rank, self.layout_rooms, self.world_size)]
        return self._layout_cache

    def _scenes(self, epoch: int) -> Iterator[tuple[dict, list[Record] | None]]:
        """(scene, its records or None for the workflow's) of this rank for one epoch: the shards'
        scenes, with the generated rooms (if any) spread among them in a seeded order, so that
        every shuffle group mixes both."""
        scenes = (s for s in iter_scenes(self.shard_dir, rank=self.rank, world_size=self.world_size,
                                         epoch=epoch, seed=self.seed)
                  if s["scene_id"] not in self.exclude_scenes)
        if not self.layout_rooms:
            yield from ((s, None) for s in scenes)
            return
        mix = random.Random(f"{self.seed}-{epoch}-{self.rank}-layout")
        rooms = list(self._layout_rooms())
        mix.shuffle(rooms)
        _, index = read_set_index(self.shard_dir)
        shard_left = max(1, (len(set(index) - self.exclude_scenes)) // self.world_size)
        for scene in scenes:
            while rooms and mix.random() < len(rooms) / (len(rooms) + shard_left):
                yield rooms.pop()
            yield scene, None
            shard_left = max(1, shard_left - 1)
        yield from reversed(rooms)

    def items(self, epoch: int, skipped: Counter | None = None) -> Iterator[Item]:
        """One pass over this rank's examples, shuffled within groups of `shuffle_scenes` scenes;
        records that could not be examples are tallied in `skipped`."""
        buffer: list[Item] = []
        scenes_in_buffer, chunk = 0, 0
        for scene, records in self._scenes(epoch):
            buffer += self._examples(scene, epoch, skipped, records)
            scenes_in_buffer += 1
            if scenes_in_buffer == self.shuffle_scenes:
                random.Random(f"{self.seed}-{epoch}-{self.rank}-{chunk}").shuffle(buffer)
                yield from buffer
                buffer, scenes_in_buffer, chunk = [], 0, chunk + 1
        random.Random(f"{self.seed}-{epoch}-{self.rank}-{chunk}").shuffle(buffer)
        yield from buffer

    def examples_per_form(self) -> Counter:
        """Examples of this rank per epoch by form of scene (`scene_form`; the counts do not depend on
        the epoch's sampling); also tallies the skipped records in `self.skipped`."""
        tally: Counter = Counter()
        forms = Counter(scene_form(inputs) for _, inputs in self.items(0, tally))
        self.skipped = tally
        return forms

    def local_batches_per_epoch(self) -> int:
        """Batches of this rank per epoch: each form of scene is batched apart (`batches`)."""
        return sum(math.ceil(n / self.batch_size) for n in self.examples_per_form().values())

    def batches(self, epoch: int, num_batches: int) -> Iterator[list[Item]]:
        """Exactly `num_batches` micro-batches, cycling over this rank's part when it runs short. A
        batch holds one form of scene (proxies, or simplified scenes: stage 4's generated rooms),
        as the collator and the model take one per batch."""
        produced, passes = 0, 0
        while produced < num_batches:
            pending: dict[str, list[Item]] = {}
            any_item = False
            for item in self.items(epoch):  # a repeat pass keeps the rank's part and order
                any_item = True
                batch = pending.setdefault(scene_form(item[1]), [])
                batch.append(item)
                if len(batch) == self.batch_size:
                    yield pending.pop(scene_form(item[1]))
                    produced += 1
                    if produced == num_batches:
                        return
            for batch in pending.values():
                yield batch
                produced += 1
                if produced == num_batches:
                    return
            if not any_item:
                raise ValueError(f"rank {self.rank}: no training examples for stage {self.stage} in "
                                 f"{self.shard_dir}")
            passes += 1
