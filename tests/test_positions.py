"""Rotary position ids of the proxies: each `train.rope_positions` layout against hand-computed ids,
and the layout carried from the train config through a stage's export into the collated batches."""

from __future__ import annotations

import pytest
import torch

from schemas.config_train import ROPE_POSITIONS, TrainConfig
from trainer.positions import quantize_height, rope_position_ids

# Two text tokens, then three proxies in BFS order at height bins 0, 3, 1, then two text tokens;
# height_bins = 4. Rows: temporal, height, width.
Z_BINS = torch.tensor([0, 3, 1])


def test_height_layout_hand_computed():
    ids = rope_position_ids(2, Z_BINS, 2, height_bins=4, variant="height")
    assert ids.tolist() == [[0, 1, 2, 2, 2, 6, 7],
                            [0, 1, 2, 5, 3, 6, 7],
                            [0, 1, 2, 5, 3, 6, 7]]
    assert ids.dtype == torch.int64


def test_bfs_layout_hand_computed():
    ids = rope_position_ids(2, Z_BINS, 2, height_bins=4, variant="bfs")
    assert ids.tolist() == [[0, 1, 2, 3, 4, 6, 7],
                            [0, 1, 2, 5, 3, 6, 7],
                            [0, 1, 2, 5, 3, 6, 7]]


def test_bfs_layout_text_after_longer_scene():
    # Five proxies with height_bins 4: the text continues at 1 + K = 6, after the last BFS index.
    z = torch.tensor([1, 1, 0, 2, 1])
    ids = rope_position_ids(1, z, 1, height_bins=4, variant="bfs")
    assert ids.tolist() == [[0, 1, 2, 3, 4, 5, 6],
                            [0, 2, 2, 1, 3, 2, 6],
                            [0, 2, 2, 1, 3, 2, 6]]
    # The height layout keeps the fixed offset: text after at 1 + height_bins whatever K is.
    assert rope_position_ids(1, z, 1, height_bins=4, variant="height")[:, -1].tolist() == [5, 5, 5]


def test_same_height_proxies_differ_only_under_bfs():
    z = torch.tensor([2, 2, 2])
    height = rope_position_ids(0, z, 0, height_bins=4, variant="height")
    bfs = rope_position_ids(0, z, 0, height_bins=4, variant="bfs")
    assert len({tuple(c) for c in height.T.tolist()}) == 1  # all three rows equal for all three
    assert len({tuple(c) for c in bfs.T.tolist()}) == 3


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="rope_positions"):
        rope_position_ids(0, Z_BINS, 0, height_bins=4, variant="zigzag")
    with pytest.raises(ValueError, match="rope_positions"):
        TrainConfig(rope_positions="zigzag")
    assert set(ROPE_POSITIONS) == {"height", "bfs"}


def test_quantize_height_hand_computed():
    z = torch.tensor([-1.0, -0.5, 0.49, 0.5, 3.49, 9.0, float("nan")])
    # range (-0.5, 3.5) in 4 bins of 1 m: below and NaN -> 0, above -> 3
    assert quantize_height(z, (-0.5, 3.5), 4).tolist() == [0, 0, 0, 1, 3, 3, 0]


@pytest.mark.parametrize("variant", ["height", "bfs"])
def test_layout_reaches_the_batches_through_the_export(tmp_path, variant):
    """A stage started from a model trained with the other layout takes its train config's
    layout; the export records it, and the exported model's collator lays it out."""
    import numpy as np

    from pipeline.toy.models import build_toy_qwen
    from schemas.config_train import StageConfig
    from trainer.shard_reader import Collator
    from trainer.model import Proxy3DModel
    from trainer.examples import Example
    from trainer.train import _load_model

    base = build_toy_qwen(tmp_path / "qwen", ["What is a chair?"])
    previous = Proxy3DModel.build(str(base), feat_dim=8, num_obj_tokens=4, categories=["chair"],
                                  height_bins=4, height_range=(0.0, 4.0), fourier_dim=8)
    previous.cfg.rope_positions = next(p for p in ROPE_POSITIONS if p != variant)
    previous.export(tmp_path / "stage3")
    stage4 = StageConfig(stage=4, trainable=["projector"], init_from=str(tmp_path / "stage3"))
    model = _load_model(None, TrainConfig(rope_positions=variant), stage4, 8, ["chair"])
    assert model.cfg.rope_positions == variant
    loaded = Proxy3DModel.from_pretrained(model.export(tmp_path / "model"))
    assert loaded.cfg.rope_positions == variant
    scene = {"xyz": np.array([[0, 0, 0.5], [1, 0, 3.5], [0, 1, 1.5]], np.float32),
             "ident": np.array([0, 1, 2]), "categories": None, "feat": np.zeros((3, 8), np.float32)}
    batch = Collator(loaded.tokenizer, loaded.cfg, loaded.category_ids)(
        [(Example("s", "object_name", "What is <OBJ001>?", "chair"), scene)])
    slots = batch["input_ids"][0] == loaded.cfg.scene_token_id
    scene_pos = batch["position_ids"][:, 0, slots]
    start = int(slots.nonzero()[0])
    expected_temporal = [start + k for k in range(3)] if variant == "bfs" else [start] * 3
    assert scene_pos[0].tolist() == expected_temporal
    assert scene_pos[1].tolist() == [start + 0, start + 3, start + 1]
