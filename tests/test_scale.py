"""`make bench-gpu` on a machine without a GPU: benchmarks/scale.py --rehearsal runs its CPU fallback
(the toy models at tiny sizes) through the same steps as the GPU rehearsal and says so; the results
files name the device that produced them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_make_targets_run_the_scale_benchmark():
    dry = subprocess.run(["make", "-n", "bench-gpu", "bench-scale"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = [line for line in dry.stdout.splitlines() if "benchmarks/scale.py" in line]
    assert len(lines) == 2 and "--rehearsal" in lines[0] and "--preset cpu" in lines[1]


@pytest.mark.slow
def test_gpu_rehearsal_cpu_fallback(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the rehearsal runs the gpu preset, not its fallback")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "benchmarks/scale.py", "--rehearsal", "--out", str(tmp_path / "results"),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "No GPU found: this is the CPU fallback" in proc.stdout
    (json_path,) = (tmp_path / "results").glob("scale-tiny-*.json")
    report = json.loads(json_path.read_text())
    cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    assert report["device"].startswith(cpu.split(":", 1)[1].strip()) and report["preset"] == "tiny"
    assert json_path.with_suffix(".md").read_text().count(report["device"]) == 1
    # The meta-device table of the real architectures is in every run, and matches the cards.
    assert [r["model"] for r in report["meta"]] == ["Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct",
                                                    "facebook/VGGT-1B", "facebook/sam2.1-hiera-large"]
    assert all(r["matches"] for r in report["meta"])
    steps = {r["step"].split(" (")[0]: r for r in report["steps"]}
    for name in ("encoder", "geometry", "segmenter", "align", "patchify"):  # the feature stage's own timers
        assert steps[name]["seconds"] > 0
    for name in ("feature stage, whole scene", "cluster to 32 proxies"):
        assert steps[name]["seconds"] > 0 and steps[name]["peak_mb"] > 0
    proxies = steps["train step, proxies"]
    patches = steps["train step, all patches"]
    # 4 frames of 112 x 140 px are 4 x 4 x 5 = 80 patch tokens against 32 proxies, same prompt around them.
    assert patches["tokens"] == 80 and proxies["tokens"] == 32
    assert patches["seq_len"] - proxies["seq_len"] == 80 - 32
    assert proxies["trainable"] == "stage 3 recipe" and proxies["step_s"] > 0
