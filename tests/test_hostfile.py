"""The DeepSpeed launcher with a hostfile, for real, on CPU: `deepspeed --hostfile` runs trainer/run.py
as 2 ranks two ways, and both give the same training (step for step, weights within 1e-5).

- one host, `localhost slots=2`: the launcher's own single-node path (world info {localhost: [0, 1]},
  what `deepspeed --num_gpus 2` builds). A hostfile makes the launcher treat the job as multi-node
  and check passwordless ssh to the first host first; there is no ssh server here (nor pdsh), so
  `--no_ssh_check` skips that check and `--master_addr` stands in for the address it would otherwise
  ask the host over ssh (`hostname -I`).
- two hosts, one slot each, as on a real cluster without ssh: the same command on every node with
  `--no_ssh --node_rank i --master_addr <node 0>` (DeepSpeed's launcher starts only its node's
  ranks; global ranks come from the hostfile's order). Both "nodes" run on this machine.

A rank is evidence only if it wrote something: every rank saves its own ZeRO optimizer partition
and its p3d state into the checkpoint, so both ranks' files must be there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from pipeline.toy.models import build_toy_qwen
from tests.synthetic_shards import write_synthetic
from trainer.env import free_port

ROOT = Path(__file__).resolve().parents[1]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
STEPS = 3

pytestmark = pytest.mark.slow


def _workflow(root: Path) -> Path:
    qwen = build_toy_qwen(root / "qwen", ["What is a chair?", "How many lamps are in the room?"])
    # Two scenes, one shard each: each rank reads one shard.
    _, records = write_synthetic(root / "data", num_scenes=2, dim=128, scenes_per_shard=1)
    wf = {"name": "hostfile", "out": str(root / "data"), "source": {"kind": "toy", "path": str(root / "scenes")},
          "train": {"model": str(qwen), "proxies": "synthetic", "records": str(records), "out": str(root / "runs"),
                    "num_obj_tokens": 32, "height_bins": 16, "fourier_dim": 16, "save_every": 1000,
                    "log_every": 1, "deepspeed": "zero2",
                    "stages": [{"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": STEPS,
                                "lr": 2e-3, "batch_size": 8, "warmup_ratio": 0.0}]}}
    path = root / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def _launch(hostfile: Path, launcher_args: list[str], port: int, wf: Path, out: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(key, None)
    cmd = [str(DEEPSPEED), "--hostfile", str(hostfile), *launcher_args, "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(ROOT / "trainer/run.py"), "--stage", "1", "--workflow", str(wf),
           "--out", str(out)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _finish(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    try:
        for proc, log in zip(procs, logs):
            proc.wait(timeout=600)
            assert proc.returncode == 0, log.read_text()[-4000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_hostfile_launches_two_ranks_one_host_and_two_nodes_alike(tmp_path):
    wf = _workflow(tmp_path)
    one_host, two_nodes = tmp_path / "hostfile.one", tmp_path / "hostfile.two"
    one_host.write_text("localhost slots=2\n")
    two_nodes.write_text("node-a slots=1\nnode-b slots=1\n")
    runs = {"one_host": tmp_path / "one_host", "two_nodes": tmp_path / "two_nodes"}
    logs = [tmp_path / f"{name}.log" for name in ("one_host", "node0", "node1")]
    # Both jobs at once (different ports): most of each job's time is start-up and rendezvous.
    port_one, port_two = free_port(), free_port()
    procs = [_launch(one_host, ["--no_ssh_check"], port_one, wf, runs["one_host"], logs[0])]
    procs += [_launch(two_nodes, ["--no_ssh", "--node_rank", str(rank)], port_two, wf, runs["two_nodes"], log)
              for rank, log in ((0, logs[1]), (1, logs[2]))]
    _finish(procs, logs)

    # The launchers' own account of the world: 2 ranks, on one node or on two.
    assert "dist_world_size=2" in logs[0].read_text() and "nnodes=1, num_local_procs=2" in logs[0].read_text()
    for rank, log in ((0, logs[1]), (1, logs[2])):
        text = log.read_text()
        assert "dist_world_size=2" in text and f"nnodes=2, num_local_procs=1, node_rank={rank}" in text

    train_logs = {}
    for name, out in runs.items():
        stage = out / "stage1"
        (tag,) = [p for p in (stage / "checkpoints").iterdir() if p.is_dir()]
        for rank in (0, 1):  # each rank wrote its own optimizer partition and p3d state
            assert (tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").exists(), (name, rank)
            assert (tag / f"p3d_state_rank{rank}.json").exists(), (name, rank)
        assert json.loads((stage / "model" / "p3d_train.json").read_text())["world_size"] == 2
        train_logs[name] = [json.loads(line) for line in (stage / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in train_logs[name]] == list(range(1, STEPS + 1))

    # Same ranks, same data split, same gloo reductions: the same training. Not to the bit: the
    # trainer's losses vary by ~1e-7 between runs of one launcher mode (measured here: sequential runs
    # agree bit for bit, runs started while the machine is loaded differ by 1e-6 in the weights).
    one, two = train_logs["one_host"], train_logs["two_nodes"]
    assert [(r["step"], r["epoch"], r["lr"]) for r in one] == [(r["step"], r["epoch"], r["lr"]) for r in two]
    assert [r["loss"] for r in one] == pytest.approx([r["loss"] for r in two], rel=1e-5)
    assert one[-1]["loss"] < one[0]["loss"]
    for weights in ("model.safetensors", "p3d_modules.safetensors"):
        a = load_file(runs["one_host"] / "stage1" / "model" / weights)
        b = load_file(runs["two_nodes"] / "stage1" / "model" / weights)
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=f"{weights}: {name}")
