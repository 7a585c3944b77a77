"""Default per-stage recipes, used for any stage a workflow's `train.stages` does not list.

Two families: a pretrained Qwen2.5-VL (LoRA on the language model, small learning rates, the paper's
short early stages) and the toy world's random-weight tiny model, which must learn the language from
scratch in minutes on a CPU: the whole language model trains, with a high learning rate and many
epochs over the few toy scenes.
"""

from __future__ import annotations

from schemas.config_train import StageConfig, TrainConfig

PRETRAINED = {
    1: dict(trainable=["identifiers", "lora"], epochs=1, lr=1e-4, batch_size=4),
    2: dict(trainable=["position", "lora"], epochs=1, lr=1e-4, batch_size=4),
    3: dict(trainable=["position", "lora"], epochs=1, lr=1e-4, batch_size=4),
    4: dict(trainable=["projector", "position", "lora"], epochs=1, lr=5e-5, batch_size=4),
}
# Measured on the default toy world (8 scenes, 128 proxies, 2 cores): ~3.5 min for the four stages,
# training records fitted (>= 0.96 on every task but captions). Epochs count passes over the scenes:
# with more scenes, lower them to keep the same number of steps.
TOY = {
    1: dict(trainable=["identifiers", "language_model"], epochs=40, lr=1e-3, batch_size=8, warmup_ratio=0.05),
    2: dict(trainable=["position", "language_model"], epochs=20, lr=1e-3, batch_size=8, warmup_ratio=0.05),
    3: dict(trainable=["position", "language_model"], epochs=20, lr=1e-3, batch_size=8, warmup_ratio=0.05),
    4: dict(trainable=["projector", "position", "identifiers", "language_model"], epochs=60, lr=1e-3,
            batch_size=8, warmup_ratio=0.05),
}


def stage_config(cfg: TrainConfig, stage: int) -> StageConfig:
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"--stage must be 1-4, got {stage}")
    listed = cfg.stage(stage)
    if listed is not None:
        return listed
    table = TOY if cfg.model.startswith("toy:") else PRETRAINED
    return StageConfig(stage=stage, **table[stage])
