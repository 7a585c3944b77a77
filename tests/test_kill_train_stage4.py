"""Stage 4 (real proxies, projector + position embeddings + LoRA) killed by SIGKILL at random points,
several times, then resumed: the export equals an uninterrupted run's and the log holds every step
once. Stage 1's kills are tests/test_trainer_resume.py; stage 4 adds the proxy path and LoRA's
adapters to what a checkpoint must restore."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.kill_helpers import kill_once_logged
from tests.test_trainer_resume import _assert_same_weights, _logged_steps
from tests.test_trainer_run import _workflow

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
KILLS = 2


@pytest.mark.slow
def test_stage4_killed_at_random_points_then_resumed_equals_uninterrupted(tmp_path):
    from tests.synthetic_shards import untrained_model
    from trainer.train import train

    start, qwen, _, records = untrained_model(tmp_path, ["What is a chair?", "How many lamps are in the room?"])
    stages = [{"stage": 4, "trainable": ["projector", "position", "lora"], "max_steps": STEPS, "lr": 1e-3,
               "batch_size": 4, "init_from": str(start)}]
    full = train(_workflow(tmp_path, qwen, records, "full", stages, save_every=2, lora_rank=4), 4)

    wf = _workflow(tmp_path, qwen, records, "killed", stages, save_every=2, lora_rank=4)
    stage_dir = tmp_path / "killed/stage4"
    env = dict(os.environ, TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "P3D_WORKFLOW"):
        env.pop(k, None)
    cmd = [sys.executable, str(ROOT / "trainer/run.py"), "--stage", "4", "--workflow", str(wf), "--resume"]
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    kill_at = sorted(rng.sample(range(1, STEPS - 1), KILLS))
    codes = []
    for target in kill_at:
        delay_s = rng.uniform(0.0, 0.3)
        codes.append(kill_once_logged(cmd, env, ROOT, stage_dir / "train_log.jsonl", target, delay_s))
        if codes[-1] == 0:
            break  # it finished first
    assert -signal.SIGKILL in codes, f"every run finished before its kill: {codes}"

    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_weights(full, stage_dir / "model")
    assert _logged_steps(stage_dir) == list(range(1, STEPS + 1)), kill_at
