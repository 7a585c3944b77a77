"""The default recipe of a training stage a workflow's `train.stages` does not list: the paper's,
for a pretrained Qwen2.5-VL (LoRA on the language model, small learning rates, short early stages).

The default does not depend on the model id. A workflow whose model must learn more than a
pretrained one does lists its stages: the toy world's random-weight tiny model learns the language
from scratch, and `workflows/toy.yaml` is the one home of that recipe. A `random:` id (a real
architecture with random weights, pipeline/models/real_configs.py) stands in for the real
checkpoint's compute and memory, so it takes the real checkpoint's recipe.
"""

from __future__ import annotations

from schemas.config_train import StageConfig, TrainConfig

PRETRAINED = {
    1: dict(trainable=["lora"], epochs=1, lr=1e-4, batch_size=4),  # identifiers stay drawn (paper 3.2)
    2: dict(trainable=["position", "lora"], epochs=1, lr=1e-4, batch_size=4),
    3: dict(trainable=["position", "lora"], epochs=1, lr=1e-4, batch_size=4),
    4: dict(trainable=["projector", "position", "lora"], epochs=1, lr=5e-5, batch_size=4),
}


def stage_config(cfg: TrainConfig, stage: int) -> StageConfig:
    """The stage as the workflow lists it, else the paper's default (module docstring)."""
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"--stage must be 1-4, got {stage}")
    listed = cfg.stage(stage)
    if listed is not None:
        return listed
    return StageConfig(stage=stage, **PRETRAINED[stage])
