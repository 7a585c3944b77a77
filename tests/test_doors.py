"""The four doors of the README's quick start, typed as a user types them (issue 15): through the
Makefile, the installed `p3d` script and the DeepSpeed launcher, as child processes. The workflow is
the user's choice through $P3D_WORKFLOW: the toy workflow, shrunk to a 3-scene world under tmp.
The fourth door, the CI smoke run (`make smoke`), is tests/test_demo.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from schemas import load_workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv that runs the tests: its p3d and deepspeed scripts
NUM_SCENES = 3


def _env(workflow: Path | None) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "P3D_WORKFLOW", "SET",
                "SCENES", "WORKFLOW", "MAKEFLAGS"):
        env.pop(key, None)
    if workflow is not None:
        env["P3D_WORKFLOW"] = str(workflow)
    return env


def _run(argv: list[str], workflow: Path | None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=_env(workflow), capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A first-run error: non-zero exit, one `error:` line, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """workflows/toy.yaml with a 3-scene world, small frames and one-step training, all under tmp."""
    root = tmp_path_factory.mktemp("doors")
    wf = load_workflow(ROOT / "workflows" / "toy.yaml").model_dump(mode="json")
    wf.update(name="doors", out=str(root / "data"))
    wf["source"].update(path=str(root / "data" / "scenes"),
                        toy={"num_scenes": NUM_SCENES, "frames": 8, "seed": 5, "image_size": [112, 140]})
    wf["features"].update(num_frames=4, image_size=[112, 140], num_actors=1)
    wf["cluster"].update(proxies=32, scenes_per_shard=2)
    wf["train"].update(out=str(root / "train"), log_every=1,
                       stages=[dict(s, max_steps=1) for s in wf["train"]["stages"]])
    path = root / "doors.yaml"
    path.write_text(yaml.safe_dump(wf, sort_keys=False))
    return path


def test_make_features_scannet_without_the_dataset_says_where_it_looked_and_how_to_point_elsewhere():
    looked = load_workflow(ROOT / "workflows" / "scannet.yaml").source.path
    if Path(looked).exists():
        pytest.skip(f"the ScanNet scans are at {looked}: this door would start the real run")
    proc = _run(["make", "features", "SCENES=scannet"], None)
    # The command's first line, after make's own lines (its echo; "Entering directory" under `make test`).
    ours = [line for line in proc.stdout.splitlines() if not line.startswith(("make", ".venv/bin/"))]
    assert ours[0] == "workflow: workflows/scannet.yaml (--workflow)"
    error = _one_line_error(proc)
    assert looked in error
    assert "edit source.path in workflows/scannet.yaml" in error and "--set source.path=" in error
    assert "SET=source.path=" in error


def test_a_bad_set_is_refused_naming_the_override():
    error = _one_line_error(_run(["make", "cluster", "SET=cluster.proxies=many"], None))
    assert error.startswith("error: --set cluster.proxies: field 'cluster.proxies'")


def test_make_features_reads_P3D_WORKFLOW_and_SET(tiny):
    proc = _ok(_run(["make", "features", "SET=features.num_frames=3 features.num_actors=1"], tiny))
    first = next(line for line in proc.stdout.splitlines() if line.startswith("workflow: "))
    assert first == f"workflow: {tiny} (from P3D_WORKFLOW) --set features.num_frames=3 --set features.num_actors=1"
    data = Path(load_workflow(tiny).out)
    import zarr

    for i in range(NUM_SCENES):
        group = zarr.open_group(str(data / "features" / f"toy{i:04d}"), mode="r")
        assert group.attrs["complete"] is True and group["feat"].shape[0] == 3  # the --set reached the run
    saved = sorted((data / "features" / "_runs").glob("*.workflow.yaml"))
    assert len(saved) == 1 and load_workflow(saved[0]).features.num_frames == 3


def test_p3d_cluster_proxies_writes_a_set_named_after_them(tiny):
    data = Path(load_workflow(tiny).out)
    proc = _ok(_run([str(BIN / "p3d"), "cluster", "--proxies", "24"], tiny))
    assert proc.stdout.splitlines()[0] == f"workflow: {tiny} (from P3D_WORKFLOW)"
    from pipeline.cluster.shards import load_scene_proxies

    index = json.loads((data / "proxies" / "k24" / "index.json").read_text())["scenes"]
    assert sorted(index) == [f"toy{i:04d}" for i in range(NUM_SCENES)]
    for scene_id in index:
        sample = load_scene_proxies(data, "k24", scene_id)
        assert sample["meta"].budget == 24 and len(sample["xyz"]) == 24
    resolved = load_workflow(data / "proxies" / "k24" / "resolved_workflow.yaml")
    assert resolved.cluster.proxies == 24 and resolved.cluster.name == "k24"
    assert not (data / "proxies" / "default").exists()  # the set the workflow trains on is untouched

    # The same through the Makefile, several overrides; then the workflow's own set, unchanged.
    _ok(_run(["make", "cluster", "SET=cluster.proxies=16 cluster.seed=1"], tiny))
    assert load_scene_proxies(data, "k16-seed1", "toy0001")["meta"].budget == 16
    _ok(_run(["make", "cluster"], tiny))
    assert load_scene_proxies(data, "default", "toy0001")["meta"].budget == 32

    error = _one_line_error(_run([str(BIN / "p3d"), "inspect", "toy0000", "--name", "k700"], tiny))
    assert "'k700' not found" in error and "default, k16-seed1, k24" in error


def test_deepspeed_stage_3_trains_from_stage_2s_model(tiny):
    """After the cluster door: stage 3 without stage 2 names the command that makes it; then the
    stages before it, then `deepspeed trainer/run.py --stage 3` itself."""
    train_out = Path(load_workflow(tiny).train.out)
    if not (Path(load_workflow(tiny).out) / "proxies" / "default" / "index.json").exists():
        _ok(_run(["make", "cluster"], tiny))
    error = _one_line_error(_run([sys.executable, "trainer/run.py", "--stage", "3", "--max-steps", "1"], tiny))
    assert "`deepspeed trainer/run.py --stage 2` makes it" in error and str(train_out / "stage2" / "model") in error
    assert not (train_out / "stage3").exists()  # nothing written before the inputs are there

    for stage in (1, 2):
        _ok(_run([sys.executable, "trainer/run.py", "--stage", str(stage)], tiny))
    with socket.socket() as s:  # the launcher's default port may be taken by another job on the machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _ok(_run([str(BIN / "deepspeed"), "--master_port", str(port), "trainer/run.py", "--stage", "3",
                     "--max-steps", "1"], tiny))
    assert f"workflow: {tiny} (from P3D_WORKFLOW)" in proc.stdout
    config = json.loads((train_out / "stage3" / "model" / "p3d_config.json").read_text())
    assert config["stages_done"] == [1, 2, 3]
    log = [json.loads(x) for x in (train_out / "stage3" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]
    resolved = load_workflow(train_out / "stage3" / "resolved_workflow.yaml")
    assert resolved.train.stage(3).max_steps == 1 and resolved.train.out == str(train_out)
