"""Trainer configuration: DeepSpeed JSONs, default stage recipes, the learning-rate schedule, run.py flags."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from schemas.config_train import StageConfig, TrainConfig
from trainer.recipes import stage_config
from trainer.train import CONFIG_DIR, deepspeed_config, lr_lambda


@pytest.mark.parametrize("name,stage", [("zero2", 2), ("zero3", 3), ("zero3_offload", 3)])
def test_deepspeed_configs_fill_batch_and_precision(name, stage):
    raw = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert raw["zero_optimization"]["stage"] == stage
    cpu = deepspeed_config(name, micro_batch=3, grad_accum=4, world_size=2, on_gpu=False)
    assert cpu["train_batch_size"] == 24 and cpu["train_micro_batch_size_per_gpu"] == 3
    assert cpu["bf16"] == {"enabled": False}
    assert deepspeed_config(name, 1, 1, 1, on_gpu=True)["bf16"] == {"enabled": True}
    if "offload_optimizer" in raw["zero_optimization"]:
        assert cpu["zero_optimization"]["offload_optimizer"]["pin_memory"] is False
        assert cpu["zero_force_ds_cpu_optimizer"] is False


def test_schedule_warms_up_then_decays_to_floor():
    fn = lr_lambda(total_steps=100, warmup_steps=10)
    warm = [fn(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2 and fn(10) == pytest.approx(1.0)
    decay = [fn(s) for s in range(10, 101)]
    assert decay == sorted(decay, reverse=True)
    assert fn(100) == pytest.approx(0.1)


def test_constant_schedule_keeps_the_warmup_then_the_full_rate():
    cosine, constant = lr_lambda(100, 10), lr_lambda(100, 10, "constant")
    assert [constant(s) for s in range(10)] == [cosine(s) for s in range(10)]
    assert all(constant(s) == 1.0 for s in range(10, 101))
    assert cosine(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # the reference


def test_recipes_listed_stage_wins_and_the_default_is_the_papers_for_every_model_id():
    # the paper's stage 4 (LoRA with the projector and positions, lr 5e-5), whatever the id says
    for model in ("Qwen/Qwen2.5-VL-7B-Instruct", "toy:qwen2_5_vl", "random:qwen2_5_vl_7b", "/some/folder"):
        default4 = stage_config(TrainConfig(model=model), 4)
        assert default4.trainable == ["projector", "position", "lora"] and default4.lr == 5e-5, model
        assert stage_config(TrainConfig(model=model), 1).trainable == ["lora"], model
    listed = TrainConfig(model="toy:qwen2_5_vl", stages=[StageConfig(stage=2, trainable=["position"], lr=0.1)])
    assert stage_config(listed, 2).trainable == ["position"] and stage_config(listed, 2).lr == 0.1
    with pytest.raises(ValueError, match="1-4"):
        stage_config(listed, 5)
    with pytest.raises(ValueError, match="listed 2 times"):
        TrainConfig(stages=[StageConfig(stage=1, trainable=["projector"])] * 2).stage(1)


def test_run_py_and_p3d_train_take_the_same_flags_and_the_launchers(tmp_path, monkeypatch, capsys):
    """Every flag of one is a flag of the other, and the deepspeed launcher's `--local_rank=N` parses
    and sets LOCAL_RANK; the run then stops at the missing workflow, as a bad input (exit 2)."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from p3d.cli import app
    from trainer import run

    p3d_train = get_command(app).commands["train"]
    flags = lambda cmd: sorted(opt for p in cmd.params for opt in p.opts + p.secondary_opts)  # noqa: E731
    assert flags(p3d_train) == flags(run.command())
    assert {"--max-steps", "--deepspeed-config", "--local_rank", "--resume", "--allow-changed-config"} <= set(
        flags(p3d_train))

    missing = tmp_path / "nope.yaml"
    argv = ["--stage", "2", "--workflow", str(missing), "--local_rank=1", "--resume", "--max-steps", "3",
            "--deepspeed-config", "zero3"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2 and os.environ["LOCAL_RANK"] == "1"
    assert capsys.readouterr().err == f"error: {missing}: workflow file not found\n"
    res = CliRunner().invoke(app, ["train"] + argv)
    assert res.exit_code == 2 and f"error: {missing}: workflow file not found" in res.output
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--stage", "2", "--deepspeed-config", "zero9"])
    assert exit_info.value.code == 2 and "'zero9' is not one of" in capsys.readouterr().err


def test_the_toy_workflow_lists_every_stage():
    """The toy recipe's one home is workflows/toy.yaml: its random-weight model must train the whole
    language model, which the default (LoRA, for a pretrained model) would not, so no stage may fall
    back to the default."""
    from schemas import load_workflow

    wf = load_workflow(Path(__file__).parents[1] / "workflows" / "toy.yaml")
    for stage in (1, 2, 3, 4):
        listed = wf.train.stage(stage)
        assert listed is not None and stage_config(wf.train, stage) is listed, f"stage {stage}"
        assert "language_model" in listed.trainable and "lora" not in listed.trainable, f"stage {stage}"
