"""Two-rank DeepSpeed training (ZeRO-2 over gloo on CPU, launched by torchrun) killed by SIGKILL of
the launcher's whole process group at random points, then resumed: the final weights equal an
uninterrupted two-rank run's and the log holds every step once, with the same losses.

DeepSpeed's CPU path is deterministic here (gloo's all-reduce of two ranks adds in a fixed order,
the loader's split of shards over ranks is fixed, and resume restores both ranks' RNGs and data
positions), so the comparison is exact (atol 1e-6, as the single-process resume test)."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.kill_helpers import descendants, last_logged_step, still_running
from tests.test_trainer_run import _workflow
from trainer.env import free_port

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
KILLS = 2
STAGES = [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": STEPS, "lr": 1e-3,
           "batch_size": 4}]


def _launch(wf: Path, resume: bool) -> tuple[subprocess.Popen, int]:
    """torchrun with two ranks in a session of its own (so the whole group can be killed)."""
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions"))
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TORCH_EXTENSIONS_DIR=extensions)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "P3D_WORKFLOW"):
        env.pop(k, None)
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(ROOT / "trainer/run.py"), "--stage", "1", "--workflow", str(wf)] + ["--resume"] * resume
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True), port


def _cleanup_shm(port: int) -> None:
    """DeepSpeed's CPU all-reduce buffers of a killed job (trainer/env.cleanup_shm cannot run in it)."""
    for path in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        Path(path).unlink(missing_ok=True)


def _log(stage_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (stage_dir / "train_log.jsonl").read_text().splitlines()]


def _run_to_end(wf: Path, resume: bool) -> str:
    proc, port = _launch(wf, resume)
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        _cleanup_shm(port)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.mark.slow
def test_two_ranks_killed_at_random_points_then_resumed_equal_uninterrupted(tmp_path):
    from pipeline.toy.models import build_toy_qwen
    from tests.synthetic_shards import write_synthetic

    qwen = build_toy_qwen(tmp_path / "qwen", ["What is a chair?", "How many lamps are in the room?"])
    _, records = write_synthetic(tmp_path / "data", num_scenes=6, dim=128, scenes_per_shard=2)
    full_wf = _workflow(tmp_path, qwen, records, "full", STAGES, save_every=2)
    _run_to_end(full_wf, resume=False)

    wf = _workflow(tmp_path, qwen, records, "killed", STAGES, save_every=2)
    stage_dir = tmp_path / "killed/stage1"
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    kill_at = sorted(rng.sample(range(1, STEPS - 1), KILLS))
    num_killed = 0
    for target in kill_at:
        proc, port = _launch(wf, resume=True)
        deadline = time.monotonic() + 600
        while last_logged_step(stage_dir / "train_log.jsonl") < target and proc.poll() is None:
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))  # a step takes ~0.1 s: some kills land inside a save
        ranks = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        _cleanup_shm(port)
        assert proc.returncode in (-signal.SIGKILL, 0), err[-3000:]
        if proc.returncode == 0:
            break  # it finished first: later kills would meet a finished stage
        num_killed += 1
        # `ranks` is empty when the kill landed before the launcher spawned them (the log kept from
        # the previous run can already hold the target step): a kill point like any other.
        assert not still_running(ranks), "a rank outlived its killed launcher"
        marker = json.loads((stage_dir / "checkpoints/p3d_latest.json").read_text())
        for rank in (0, 1):  # the marker names a checkpoint both ranks finished
            assert (stage_dir / "checkpoints" / marker["tag"] / f"p3d_state_rank{rank}.json").exists()

    assert num_killed, "every run finished before its kill: the test tested nothing"
    err = _run_to_end(wf, resume=True)
    assert "resumed from" in err
    for name in ("model.safetensors", "p3d_modules.safetensors"):
        a, b = load_file(tmp_path / "full/stage1/model" / name), load_file(stage_dir / "model" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"{name}: {k} (kills at {kill_at})")
    full_log, log = _log(tmp_path / "full/stage1"), _log(stage_dir)
    assert [r["step"] for r in log] == list(range(1, STEPS + 1)), kill_at
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in full_log], rel=1e-6)
