"""The trainer for real on CPU: DeepSpeed (gloo), the shard loader, exact resume, predict, 2-rank ZeRO-3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline.toy.models import build_toy_qwen
from tests.synthetic_shards import write_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainrun")
    qwen = build_toy_qwen(root / "qwen", ["What is a chair?", "How many lamps are in the room?"])
    shards, records = write_synthetic(root / "data", num_scenes=6, dim=128, scenes_per_shard=2)
    return root, qwen, shards, records


def _workflow(root: Path, qwen: Path, records: Path, out: str, stages: list[dict], file: str | None = None,
              **train) -> Path:
    """A workflow file `<root>/<file or out>.yaml` training on the synthetic shards into `<root>/<out>`."""
    wf = {"name": "syn", "out": str(root / "data"), "source": {"kind": "toy", "path": str(root / "scenes")},
          "train": {"model": str(qwen), "proxies": "synthetic", "records": str(records), "out": str(root / out),
                    "num_obj_tokens": 32, "height_bins": 16, "fourier_dim": 16, "save_every": 1000,
                    "log_every": 1, "stages": stages, **train}}
    path = root / f"{file or out}.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def test_loader_splits_every_scene_once_across_ranks_and_workers(setup):
    from trainer.shard_reader import iter_scenes

    _, _, shards, _ = setup
    for world, workers in [(1, 1), (2, 1), (2, 2), (4, 1)]:  # 3 shards: the last two split by sample
        seen = Counter(s["scene_id"] for r in range(world) for w in range(workers)
                       for s in iter_scenes(shards, rank=r, world_size=world, epoch=3, worker=w,
                                            num_workers=workers))
        assert sorted(seen) == [f"scene{i:04d}" for i in range(6)] and set(seen.values()) == {1}, (world, workers)


def test_stage_resume_matches_uninterrupted_run(setup):
    from trainer.train import train

    root, qwen, _, records = setup
    stages = [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": 6, "lr": 1e-3,
               "batch_size": 4}]
    full = train(_workflow(root, qwen, records, "full", stages), 1)
    interrupted_wf = _workflow(root, qwen, records, "cut", stages, save_every=3)
    assert train(interrupted_wf, 1, stop_after=3) is None
    assert not (root / "cut/stage1/model").exists()
    resumed = train(interrupted_wf, 1, resume=True)
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    pa, pb = load_file(full / "p3d_modules.safetensors"), load_file(resumed / "p3d_modules.safetensors")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=1e-6, msg=k)
    # and training did change the language model (the check above is not vacuous)
    base = load_file(qwen / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"  # the saved (checkpoint) naming
    assert not torch.allclose(base[key], a[key])
    log = [json.loads(x) for x in (root / "full/stage1/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and all(r["tokens_per_s"] > 0 for r in log)


def test_four_stages_chain_then_predict_cli(setup):
    from p3d.cli import app
    from pipeline.eval.predictions import load_predictions
    from schemas.record import load_records
    from trainer.train import train

    root, qwen, shards, records = setup
    stages = [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": 2, "lr": 1e-3},
              {"stage": 2, "trainable": ["position"], "max_steps": 1},
              {"stage": 3, "trainable": ["position", "language_model"], "max_steps": 1},
              {"stage": 4, "trainable": ["projector", "position", "lora"], "max_steps": 2, "lr": 1e-3}]
    wf = _workflow(root, qwen, records, "chain", stages)
    for stage in (1, 2, 3):
        train(wf, stage)
    folder = train(wf, 4)
    cfg = json.loads((folder / "p3d_config.json").read_text())
    assert cfg["stages_done"] == [1, 2, 3, 4]
    out = root / "preds.jsonl"
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(folder), "--shards", str(shards),
                                   "--records", str(records), "--out", str(out), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    preds = load_predictions(out)
    val = [r for r in load_records(records) if r.split == "val"]
    assert set(preds) == {r.id for r in val}
    for r in val:
        if r.answer_type == "objects":
            assert preds[r.id].object_ids is not None  # object answers always carry the list (maybe empty)


def test_fourier_term_joins_at_fourier_from_stage_untrained_until_then(setup):
    """train.fourier_from_stage 2: the stage-1 export records the term off (and the built scale);
    stage 2 switches it on and trains it (its weights move); a stage before it that names `position`
    is refused."""
    from trainer.train import train

    root, qwen, _, records = setup
    stages = [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": 2, "lr": 1e-3},
              {"stage": 2, "trainable": ["position", "language_model"], "max_steps": 2, "lr": 1e-2}]
    wf = _workflow(root, qwen, records, "late_fourier", stages, fourier_from_stage=2, fourier_out_scale=1.0)
    exports = {n: train(wf, n) for n in (1, 2)}
    cfg = {n: json.loads((f / "p3d_config.json").read_text()) for n, f in exports.items()}
    assert (cfg[1]["fourier_on"], cfg[2]["fourier_on"]) == (False, True)
    assert cfg[1]["fourier_out_scale"] == 1.0
    weights = {n: {k: v for k, v in load_file(f / "p3d_modules.safetensors").items() if k.startswith("fourier.")}
               for n, f in exports.items()}
    assert weights[1] and weights[1].keys() == weights[2].keys()
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    early = [{"stage": 1, "trainable": ["position", "language_model"], "max_steps": 1}]
    with pytest.raises(ValueError, match="fourier_from_stage"):
        train(_workflow(root, qwen, records, "early_fourier", early, fourier_from_stage=2), 1)


def test_later_stage_without_previous_export_is_a_clear_error(setup):
    from trainer.train import train

    root, qwen, _, records = setup
    wf = _workflow(root, qwen, records, "orphan", [{"stage": 3, "trainable": ["position"], "max_steps": 1}])
    with pytest.raises(ValueError, match="run --stage 2 first"):
        train(wf, 3)


@pytest.mark.slow
def test_zero3_two_processes_drive_loss_down(setup):
    root, qwen, _, records = setup
    # Two scenes, one shard each: every rank sees the same small fixed batch every step.
    shards, _ = write_synthetic(root / "fixed", num_scenes=2, dim=128, scenes_per_shard=1)
    wf = _workflow(root, qwen, records, "z3", [{"stage": 1, "trainable": ["identifiers", "language_model"],
                                                "max_steps": 12, "lr": 2e-3, "batch_size": 16,
                                                "warmup_ratio": 0.0}], deepspeed="zero3")
    data = yaml.safe_load(wf.read_text())
    data["out"] = str(root / "fixed")
    wf.write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
           str(ROOT / "trainer/run.py"), "--stage", "1", "--workflow", str(wf)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = [json.loads(x) for x in (root / "z3/stage1/train_log.jsonl").read_text().splitlines()]
    assert len(log) == 12
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    # the ZeRO-3 export gathers the full weights: it loads without DeepSpeed and has every tensor
    from trainer.model import Proxy3DModel

    model = Proxy3DModel.from_pretrained(root / "z3/stage1/model")
    assert model.identifiers.weight.shape == (32, 128)
    assert model.lm.lm_head.weight.shape[0] == len(model.tokenizer)


def test_held_out_scenes_never_reach_any_stage(setup):
    from schemas.record import load_records
    from trainer.rank_stream import StageStream
    from trainer.train import training_records

    _, _, shards, records = setup
    by_scene, held_out = training_records(records, required=True)
    val_scenes = {r.scene_id for r in load_records(records) if r.split == "val"}
    assert held_out == val_scenes and val_scenes and not (set(by_scene) & val_scenes)
    for stage in (1, 2, 3, 4):
        stream = StageStream(shards, stage, by_scene, 32, 4, exclude_scenes=held_out)
        seen = {ex.scene_id for ex, _ in stream.items(0)}
        assert seen and not (seen & val_scenes), stage


def test_stage_tasks_filter_keeps_exactly_those_tasks(setup):
    from trainer.rank_stream import StageStream
    from trainer.train import training_records

    _, _, shards, records = setup
    by_scene, held_out = training_records(records, required=True)
    everything = Counter(ex.task for ex, _ in StageStream(shards, 1, {}, 32, 4, exclude_scenes=held_out).items(0))
    assert set(everything) == {"object_name", "object_id"}
    only = Counter(ex.task for ex, _ in StageStream(shards, 1, {}, 32, 4, exclude_scenes=held_out,
                                                    tasks=["object_name"]).items(0))
    assert only == Counter({"object_name": everything["object_name"]})
    stage4 = Counter(ex.task for ex, _ in StageStream(shards, 4, by_scene, 32, 4, exclude_scenes=held_out,
                                                      tasks=["grounding", "counting"]).items(0))
    assert set(stage4) == {"grounding", "counting"}


def test_count_by_listing_reaches_the_stream_from_the_workflow(setup):
    from schemas.workflow import load_workflow
    from trainer.recipes import stage_config
    from trainer.examples import split_listed_answer
    from trainer.train import resolve_train_config, stage_stream, training_records

    root, qwen, shards, records = setup
    by_scene, held_out = training_records(records, required=True)
    stages = [{"stage": 4, "trainable": ["projector"], "tasks": ["counting"], "batch_size": 4}]
    for listing in (False, True):
        wf = load_workflow(_workflow(root, qwen, records, "listing", stages, count_by_listing=listing))
        cfg = resolve_train_config(wf, None)
        answers = [ex.answer for ex, _ in stage_stream(cfg, stage_config(cfg, 4), shards, by_scene, held_out).items(0)]
        assert answers
        for answer in answers:
            parts = split_listed_answer(answer)
            assert (parts is not None) == listing, answer
            if listing:  # the synthetic records' targets are exactly the counted objects
                listed, count = parts
                assert len(listed.split()) == int(count)


def test_record_tasks_join_stages_1_to_3_on_the_simplified_scene(setup):
    from pydantic import ValidationError

    from schemas.config_train import StageConfig
    from trainer.rank_stream import StageStream
    from trainer.train import training_records

    _, _, shards, records = setup
    by_scene, held_out = training_records(records, required=True)
    counted = Counter(r.task for recs in by_scene.values() for r in recs)
    stream = StageStream(shards, 1, by_scene, 32, 4, exclude_scenes=held_out, tasks=["object_name"],
                         record_tasks=["counting"])
    items = list(stream.items(0))
    tasks = Counter(ex.task for ex, _ in items)
    assert set(tasks) == {"object_name", "counting"} and tasks["counting"] == counted["counting"] > 0
    # The records are asked about the fused scene: one token per object, no proxy features.
    assert all(scene["feat"] is None for ex, scene in items if ex.task == "counting")
    with pytest.raises(ValidationError, match="record_tasks"):
        StageConfig(stage=4, trainable=["projector"], record_tasks=["counting"])
