"""Beyond one machine, for real: a Ray cluster of two nodes started with `ray start` (a head and a
second node, each its own set of processes with one CPU), `p3d features` and `p3d cluster` pointed at
it with RAY_ADDRESS exactly as on a real cluster, and their outputs compared with a local run.

Both nodes run on this machine (one CPU each), so the scheduler must put work on both; the run
reports name the Ray node of every scene. Ray 2.60 starts a head with token authentication, so every
process gets the same token through RAY_AUTH_TOKEN (a real cluster propagates it the same way).
The nodes are stopped by their process groups (never `ray stop`, which would stop every Ray runtime
of this user on the machine, other test sessions' included).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from trainer.env import free_port

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
P3D = Path(sys.executable).parent / "p3d"
START_TIMEOUT_S = 120

pytestmark = pytest.mark.slow


def _wait_for(log: Path, proc: subprocess.Popen, marker: str = "Ray runtime started") -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if marker in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"ray start did not come up in {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each node's process group (`ray start --block` then drains and stops its children),
    SIGKILL what is left after a grace period."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children the block process did not reap
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes (head + one more) as separate process groups; yields the client environment."""
    base = tmp_path_factory.mktemp("raycluster")
    # Ray's session folders hold unix sockets, whose paths must stay under ~107 characters.
    temp_dir = Path(f"/tmp/p3d-ray-{os.getpid()}-{secrets.token_hex(3)}")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    node_args = ["--num-cpus", "1", "--block", "--disable-usage-stats", "--temp-dir", str(temp_dir),
                 "--node-ip-address", "127.0.0.1"]
    procs: list[subprocess.Popen] = []
    try:
        head_log = base / "head.log"
        procs.append(subprocess.Popen(
            [str(RAY), "start", "--head", "--port", str(port), "--include-dashboard", "false",
             "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()), *node_args],
            env=env, stdout=head_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(head_log, procs[0])
        worker_log = base / "worker.log"
        procs.append(subprocess.Popen(
            [str(RAY), "start", "--address", f"127.0.0.1:{port}", *node_args],
            env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for(worker_log, procs[1])
        yield dict(env, RAY_ADDRESS=f"127.0.0.1:{port}")
    finally:
        _stop(procs)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def _workflow(tmp_path: Path) -> Path:
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig

    toy = {"num_scenes": 4, "frames": 4, "seed": 3}
    world = tmp_path / "world"
    build_toy_world(world, world / "scenes", ToyWorldConfig(**toy), progress=lambda _msg: None)
    wf = {
        "name": "multinode", "out": str(tmp_path / "data"),
        "source": {"kind": "toy", "path": str(world / "scenes"), "toy": toy},
        "features": {"num_frames": 4, "image_size": [112, 140], "encoder": {"model": "toy:qwen2_5_vl"},
                     "geometry": {"kind": "sim_vggt"}, "segmenter": {"kind": "sim_sam2"}, "num_actors": 2},
        "cluster": {"name": "k32", "proxies": 32, "scenes_per_shard": 2, "num_workers": 2},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    return path


def _p3d(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(P3D), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _cluster_node_ids(env: dict) -> set[str]:
    code = "import ray; ray.init(log_to_driver=False); print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(proc.stdout.split())


def _latest_report(folder: Path, pattern: str) -> dict:
    return json.loads(sorted(folder.glob(pattern))[-1].read_text())


def _group_arrays(out: Path) -> dict[str, dict[str, bytes]]:
    import zarr

    groups = {}
    for folder in sorted((out / "features").iterdir()):
        if folder.name.startswith(("_", ".")):
            continue
        group = zarr.open_group(str(folder), mode="r")
        groups[folder.name] = {name: np.asarray(arr[...]).tobytes() for name, arr in group.arrays()}
    return groups


def test_features_and_cluster_on_a_two_node_cluster_equal_a_local_run(ray_cluster, tmp_path):
    wf = _workflow(tmp_path)
    local_env = {k: v for k, v in ray_cluster.items() if k != "RAY_ADDRESS"}
    nodes = _cluster_node_ids(ray_cluster)
    assert len(nodes) == 2

    _p3d(["features", "--workflow", str(wf), "--out", str(tmp_path / "cluster")], ray_cluster)
    _p3d(["features", "--workflow", str(wf), "--out", str(tmp_path / "local"), "--executor", "local"], local_env)

    run = _latest_report(tmp_path / "cluster" / "features" / "_runs", "*.json")
    assert run["executor"] == "ray" and sorted(run["done"]) == sorted(run["nodes"]) and len(run["done"]) == 4
    assert set(run["nodes"].values()) == nodes  # every scene names its node; both nodes did scenes
    ray_groups, local_groups = _group_arrays(tmp_path / "cluster"), _group_arrays(tmp_path / "local")
    assert sorted(ray_groups) == sorted(run["done"])
    assert ray_groups == local_groups  # byte for byte, every array of every scene

    _p3d(["cluster", "--workflow", str(wf), "--out", str(tmp_path / "cluster")], ray_cluster)
    _p3d(["cluster", "--workflow", str(wf), "--out", str(tmp_path / "local"), "--executor", "local"], local_env)
    sets = {name: tmp_path / name / "proxies" / "k32" for name in ("cluster", "local")}
    report = _latest_report(sets["cluster"] / "_runs", "cluster-*.json")
    assert report["executor"] == "ray" and sorted(report["nodes"]) == sorted(run["done"])
    assert set(report["nodes"].values()) == nodes
    shards = sorted(p.name for p in sets["cluster"].glob("shard-*.tar"))
    assert shards == sorted(p.name for p in sets["local"].glob("shard-*.tar")) and len(shards) == 2
    for shard in shards:
        assert (sets["cluster"] / shard).read_bytes() == (sets["local"] / shard).read_bytes(), shard
    index = json.loads((sets["cluster"] / "index.json").read_text())
    assert index == json.loads((sets["local"] / "index.json").read_text())
