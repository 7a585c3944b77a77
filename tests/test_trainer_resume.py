"""Training resume is kill-safe: SIGKILL at random points (inside saves too), a changed config refused,
DeepSpeed's files read with torch's weights-only unpickler, and the log never repeating a step."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.toy.models import build_toy_qwen
from tests.kill_helpers import kill_once_logged
from tests.test_trainer_run import _workflow as run_workflow
from tests.synthetic_shards import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
STAGES = [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": STEPS, "lr": 1e-3,
           "batch_size": 4}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from trainer.train import train

    root = tmp_path_factory.mktemp("resume")
    qwen = build_toy_qwen(root / "qwen", ["What is a chair?", "How many lamps are in the room?"])
    _, records = write_synthetic(root / "data", num_scenes=6, dim=128, scenes_per_shard=2)
    full = train(_workflow(root, qwen, records, "full"), 1)
    return root, qwen, records, full


def _workflow(root: Path, qwen: Path, records: Path, out: str, stages=STAGES, file: str | None = None,
              **train) -> Path:
    return run_workflow(root, qwen, records, out, stages, file=file, **{"save_every": 2, **train})


def _assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    for name in ("model.safetensors", "p3d_modules.safetensors"):
        a, b = load_file(a_dir / name), load_file(b_dir / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{name}: {k}")


def _logged_steps(stage_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (stage_dir / "train_log.jsonl").read_text().splitlines()]


def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(setup):
    root, qwen, records, full = setup
    wf = _workflow(root, qwen, records, "killed")
    stage_dir = root / "killed/stage1"
    env = dict(os.environ, TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(k, None)
    cmd = [sys.executable, str(ROOT / "trainer/run.py"), "--stage", "1", "--workflow", str(wf), "--resume"]
    rng = random.Random(int(os.environ.get("P3D_KILL_SEED", "17")))
    # Kill once the log reaches a random step, then a random moment later: saves follow even steps,
    # so some kills land inside DeepSpeed's save, between it and p3d's state, or before the marker.
    kill_at = sorted(rng.sample(range(1, STEPS), 3))
    for target in kill_at:
        kill_once_logged(cmd, env, ROOT, stage_dir / "train_log.jsonl", target, rng.uniform(0.0, 0.4))
        marker = json.loads((stage_dir / "checkpoints/p3d_latest.json").read_text())
        assert (stage_dir / "checkpoints" / marker["tag"] / "p3d_state_rank0.json").exists()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    _assert_same_weights(full, stage_dir / "model")
    assert _logged_steps(stage_dir) == list(range(1, STEPS + 1)), kill_at
    # pruned: only the last checkpoint is kept, and DeepSpeed's bare `latest` is never written
    assert [p.name for p in (stage_dir / "checkpoints").iterdir() if p.is_dir()] == [f"step{STEPS:07d}"]
    assert not (stage_dir / "checkpoints/latest").exists()


def test_kill_inside_a_save_changed_config_and_no_pickle(setup, monkeypatch, capsys):
    from typer.testing import CliRunner

    from p3d.cli import app
    from trainer import run
    from trainer.checkpoint import ResumeConfigError
    from trainer.train import train

    root, qwen, records, full = setup
    wf = _workflow(root, qwen, records, "cut")
    assert train(wf, 1, stop_after=4) is None
    ckpt = root / "cut/stage1/checkpoints"
    assert json.loads((ckpt / "p3d_latest.json").read_text())["tag"] == "step0000004"
    # What a kill inside the next save leaves: DeepSpeed's half-written files and its own `latest`,
    # log lines past the checkpoint, the last one cut.
    shutil.copytree(ckpt / "step0000004", ckpt / "step0000006")
    for f in (ckpt / "step0000006").glob("*optim_states.pt"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (ckpt / "step0000006/p3d_state_rank0.json").unlink()
    (ckpt / "latest").write_text("step0000006")
    log_path = root / "cut/stage1/train_log.jsonl"
    log_path.write_text(log_path.read_text() + '{"step": 5, "loss": 1.0}\n{"step": 6, "lo')

    # A changed stage config is refused, naming the field, before anything is written.
    changed = _workflow(root, qwen, records, "cut", [dict(STAGES[0], lr=2e-3)], file="cut_lr")
    with pytest.raises(ResumeConfigError, match=r"train\.stages\[stage=1\]\.lr: 0\.001 -> 0\.002"):
        train(changed, 1, resume=True)
    resolved = (root / "cut/stage1/resolved_workflow.yaml")
    before = resolved.read_text() if resolved.exists() else None
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--stage", "1", "--workflow", str(changed), "--resume"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 -> 0.002" in err and "--allow-changed-config" in err
    assert (resolved.read_text() if resolved.exists() else None) == before
    # --max-steps and --deepspeed-config change the run's configuration in both entries alike.
    flags = ["--stage", "1", "--workflow", str(wf), "--resume", "--max-steps", "6",
             "--deepspeed-config", "zero3"]
    with pytest.raises(SystemExit) as exit_info:
        run.main(flags)
    from_run = capsys.readouterr().err
    from_p3d = CliRunner().invoke(app, ["train"] + flags)
    for code, err in ((exit_info.value.code, from_run), (from_p3d.exit_code, from_p3d.output)):
        assert code == 2 and 'train.deepspeed: "zero2" -> "zero3"' in err, err
        assert "train.stages[stage=1].max_steps: 8 -> 6" in err, err
    assert (resolved.read_text() if resolved.exists() else None) == before

    # Resuming reads DeepSpeed's .pt files with weights_only=True and never builds a full unpickler.
    loads: list = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    class NoPickle:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a full pickle.Unpickler was built while resuming")

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(pickle, "Unpickler", NoPickle)
    resumed = train(wf, 1, resume=True)
    monkeypatch.undo()
    assert loads and all(w is True for w in loads), loads
    _assert_same_weights(full, resumed)
    assert _logged_steps(root / "cut/stage1") == list(range(1, STEPS + 1))

    # Told to, resume continues under the changed config (from the last checkpoint, step 8).
    assert train(changed, 1, resume=True, allow_changed_config=True) is not None


def test_setting_added_after_a_checkpoint_counts_as_changed_only_off_its_default(tmp_path):
    """A checkpoint made before a stage field existed resumes when the field is at its default (the
    former behaviour); the same field set otherwise, or a removed field, is still a change."""
    from schemas.workflow import load_workflow
    from trainer import checkpoint
    from trainer.recipes import stage_config
    from trainer.train import resolve_train_config

    cfg = resolve_train_config(load_workflow(ROOT / "workflows/toy.yaml"), {})
    stage3, stage4 = stage_config(cfg, 3), stage_config(cfg, 4)
    assert stage3.replay_per_task == 1 and stage4.replay_per_task == 2  # the toy recipe: default, then not
    for scfg, expected in ((stage3, []), (stage4, ["train.stages[stage=4].replay_per_task: (absent) -> 2"])):
        now = checkpoint.run_identity("data/toy", cfg, scfg, 1)
        key = f"train.stages[stage={scfg.stage}].replay_per_task"
        saved = {k: v for k, v in now.items() if k != key}  # as written before the field existed
        defaults = checkpoint.identity_defaults(cfg, scfg)
        assert checkpoint.config_changes(saved, now, defaults) == expected
        # Without the defaults every added field is a change.
        assert checkpoint.config_changes(saved, now) == [f"{key}: (absent) -> {scfg.replay_per_task}"]
        # A field the checkpoint had and the config no longer has is a change, defaults or not.
        assert checkpoint.config_changes({**now, "train.gone": 1}, now, defaults) == ["train.gone: 1 -> (absent)"]

        ckpt = tmp_path / f"stage{scfg.stage}"
        ckpt.mkdir()
        (ckpt / checkpoint.MARKER).write_text(json.dumps({"tag": "step0000010", "step": 10, "config": saved}))
        if expected:
            with pytest.raises(checkpoint.ResumeConfigError, match=r"replay_per_task: \(absent\) -> 2"):
                checkpoint.check_resume(ckpt, "data/toy", cfg, scfg, 1, False)
        else:
            assert checkpoint.check_resume(ckpt, "data/toy", cfg, scfg, 1, False)["step"] == 10
