"""The cluster driver, shards and CLI on a synthetic triplet store written through the feature
stage's `write_scene`: valid WebDataset shards, byte-identical reruns, resume, failure reporting,
stats, inspect and viz; one Ray integration test."""

from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from p3d.cli import app
from pipeline.cluster.driver import run_cluster
from pipeline.cluster.shards import load_scene_proxies, proxies_dir
from tests.synthetic_triplets import store_arrays, synthetic_scene
from pipeline.features.store import write_scene
from schemas.config_cluster import ClusterConfig
from schemas.proxy import MEMBERS, ProxyMeta, SegmentInfo
from schemas.store import ModelRef, StoreAttrs

NUM_SCENES = 3
DIM = 32


def _attrs(scene_id: str, objects: list[dict], grid=(8, 10)) -> StoreAttrs:
    return StoreAttrs(
        scene_id=scene_id, source={"kind": "synthetic"},
        encoder=ModelRef(kind="synthetic", trained=False), geometry=ModelRef(kind="synthetic"),
        segmenter=ModelRef(kind="synthetic"), frame_indices=list(range(6)), image_size=[224, 280],
        patch_size=28, grid=list(grid), objects=objects, pipeline_version="test",
    )


def _write_store(out, num_scenes=NUM_SCENES):
    for i in range(num_scenes):
        scene = synthetic_scene(num_frames=6, h=8, w=10, dim=DIM, num_objects=12, seed=i)
        write_scene(out, _attrs(f"scene{i:02d}", scene.objects), store_arrays(scene))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    _write_store(out)
    return out


def _config(**kw) -> ClusterConfig:
    return ClusterConfig(**{"name": "k60", "proxies": 60, "scenes_per_shard": 2, "executor": "local", **kw})


def test_shards_are_valid_webdataset_and_match_the_schema(store):
    import webdataset as wds

    report = run_cluster(store, _config())
    assert not report.failed and len(report.done) == NUM_SCENES
    root = proxies_dir(store, "k60")
    index = json.loads((root / "index.json").read_text())["scenes"]
    assert index == {"scene00": "shard-000000.tar", "scene01": "shard-000000.tar",
                     "scene02": "shard-000001.tar"}
    names = subprocess.run(["tar", "-tf", str(root / "shard-000000.tar")], capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == [f"scene0{i}.{m}" for i in range(2) for m in sorted(MEMBERS)]
    urls = [str(root / "shard-000000.tar"), str(root / "shard-000001.tar")]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == ["scene00", "scene01", "scene02"]
    for sample in samples:
        feat, xyz, seg = sample["feat.npy"], sample["xyz.npy"], sample["segment.npy"]
        assert feat.dtype == np.float16 and feat.shape == (60, DIM)
        assert xyz.dtype == np.float32 and xyz.shape == (60, 3) and np.isfinite(xyz).all()
        assert seg.dtype == np.int32 and (np.diff(seg) >= 0).all()
        segments = [SegmentInfo.model_validate(s) for s in sample["segments.json"]]
        assert [s.id for s in segments] == list(range(len(segments))) == [s.bfs_rank for s in segments]
        assert np.bincount(seg).tolist() == [s.proxies for s in segments]
        meta = ProxyMeta.model_validate(sample["meta.json"])
        assert meta.num_proxies == 60 and meta.dim == DIM and meta.params["budget"] == 60
        # Categories come from the store's object list.
        labeled = [s for s in segments if s.label >= 0]
        assert labeled and all(s.category for s in labeled)
        assert any(s.category == "floor" for s in segments)


def test_rerun_is_byte_identical_and_resume_keeps_finished_shards(store, tmp_path):
    run_cluster(store, _config(name="a"))
    first = {p.name: p.read_bytes() for p in proxies_dir(store, "a").glob("*.tar")}
    stat_before = {p.name: p.stat().st_mtime_ns for p in proxies_dir(store, "a").glob("*.tar")}
    report = run_cluster(store, _config(name="a"))
    assert report.done == [] and sorted(report.skipped) == ["scene00", "scene01", "scene02"]
    assert {p.name: p.stat().st_mtime_ns for p in proxies_dir(store, "a").glob("*.tar")} == stat_before
    # A fresh computation under another name gives the same bytes.
    run_cluster(store, _config(name="b"))
    assert {p.name: p.read_bytes() for p in proxies_dir(store, "b").glob("*.tar")} == first
    # Changed parameters invalidate the finished shards.
    report = run_cluster(store, _config(name="a", seed=3))
    assert len(report.done) == NUM_SCENES and report.skipped == []


def test_failed_scene_is_reported_skipped_and_fails_the_cli(tmp_path):
    out = tmp_path / "data"
    _write_store(out, 2)
    scene = synthetic_scene(num_frames=6, h=8, w=10, dim=DIM, num_objects=12, seed=9)
    arrays = store_arrays(scene)
    arrays["xyz"][:] = np.nan
    write_scene(out, _attrs("broken", scene.objects), arrays)
    result = CliRunner().invoke(app, ["cluster", "--out", str(out), "--proxies", "40", "--name", "k40",
                                      "--executor", "local"])
    assert result.exit_code == 1
    assert "broken" in result.output and "no valid triplets" in result.output
    root = proxies_dir(out, "k40")
    assert json.loads((root / "index.json").read_text())["scenes"] == {"scene00": "shard-000000.tar",
                                                             "scene01": "shard-000000.tar"}
    with tarfile.open(root / "shard-000000.tar") as tar:
        assert not any(n.startswith("broken") for n in tar.getnames())
    runs = list((root / "_runs").glob("*.json"))
    assert len(runs) == 1 and "broken" in json.loads(runs[0].read_text())["failed"]


def test_cli_scenes_takes_a_comma_list_and_repeats(store):
    result = CliRunner().invoke(app, ["cluster", "--out", str(store), "--name", "some", "--proxies", "40",
                                      "--scenes", "scene02,scene00", "--executor", "local"])
    assert result.exit_code == 0, result.output
    index = json.loads((proxies_dir(store, "some") / "index.json").read_text())["scenes"]
    assert sorted(index) == ["scene00", "scene02"]
    result = CliRunner().invoke(app, ["cluster", "--out", str(store), "--name", "some", "--proxies", "40",
                                      "--scenes", "scene01", "--scenes", "scene00", "--executor", "local"])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads((proxies_dir(store, "some") / "index.json").read_text())["scenes"]) == [
        "scene00", "scene01"]


def test_cli_stats_inspect_viz_and_feature_space(store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "--out", str(store)])
    assert result.exit_code == 0, result.output
    stats = json.loads((store / "stats" / "triplets.json").read_text())
    assert stats["num_scenes"] == NUM_SCENES and len(stats["feat_mean"]) == DIM
    assert 0 < stats["nan_fraction"] < 0.1
    # Cross-check the dask mean against numpy over the valid triplets of every scene.
    from pipeline.features.store import read_scene

    feats = []
    for i in range(NUM_SCENES):
        s = read_scene(store, f"scene{i:02d}")
        feats.append(s.feat_FhwD[np.isfinite(s.xyz_Fhw3).all(-1)].astype(np.float64))
    assert np.allclose(stats["feat_mean"], np.concatenate(feats).mean(0), atol=1e-6)
    assert np.allclose(stats["feat_std"], np.concatenate(feats).std(0), atol=1e-5)

    result = runner.invoke(app, ["cluster", "--out", str(store), "--proxies", "50", "--name", "feat",
                                 "--space", "xyz+feat", "--executor", "local"])
    assert result.exit_code == 0, result.output
    sample = load_scene_proxies(store, "feat", "scene01")
    assert sample["meta"].params["space"] == "xyz+feat" and "whitening_stats_sha256" in sample["meta"].params

    result = runner.invoke(app, ["inspect", str(proxies_dir(store, "feat") / "shard-000000.tar")])
    assert result.exit_code == 0 and "scene00: 50/50 proxies" in result.output
    result = runner.invoke(app, ["inspect", "scene01", "--out", str(store), "--name", "feat"])
    assert result.exit_code == 0 and "6 frames of 8x10 patches" in result.output

    png = tmp_path / "viz.png"
    result = runner.invoke(app, ["viz", "scene01", "--out", str(store), "--name", "feat", "--png", str(png)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(png) as img:
        assert img.size[0] > 800 and len(set(img.convert("RGB").getdata())) > 20

    result = runner.invoke(app, ["cluster", "--out", str(store), "--proxies", "0"])
    assert result.exit_code != 0 and "--proxies" in result.output


def test_ray_driver_matches_sequential(store, ray_runtime):
    report = run_cluster(store, _config(name="ray", executor="ray", num_workers=2))
    assert report.executor == "ray" and not report.failed
    run_cluster(store, _config(name="seq"))
    for shard in ("shard-000000.tar", "shard-000001.tar"):
        assert (proxies_dir(store, "ray") / shard).read_bytes() == (proxies_dir(store, "seq") / shard).read_bytes()


def test_workflow_section_and_flag_overrides(store, tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(f"name: t\nout: {store}\nsource:\n  kind: toy\n  path: {tmp_path}\n"
                  "cluster:\n  name: wf\n  proxies: 30\n  scenes_per_shard: 1\n  executor: local\n")
    leftover = proxies_dir(store, "wf") / ".shard-000000.tar.tmp-1"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    # --name keeps the workflow's set; without it a changed budget writes "k20" (tests/test_doors.py)
    result = CliRunner().invoke(app, ["cluster", "--workflow", str(wf), "--proxies", "20", "--name", "wf"])
    assert result.exit_code == 0, result.output
    root = proxies_dir(store, "wf")
    assert sorted(p.name for p in root.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    assert not leftover.exists()
    assert load_scene_proxies(store, "wf", "scene02")["meta"].budget == 20
    config = json.loads((root / "config.json").read_text())["config"]
    assert config["proxies"] == 20 and config["scenes_per_shard"] == 1


def test_no_grouping_params_record_names_its_segments_and_grouping_record_is_unchanged():
    from pipeline.cluster.driver import CLUSTER_VERSION, _params_record

    assert _params_record(ClusterConfig(grouping=False), None)["segments_from"] == "proxy majority labels"
    grouped = _params_record(ClusterConfig(), None)
    assert "segments_from" not in grouped and grouped["version"] == CLUSTER_VERSION
    # The record shards made before the config was the core's input carry (the defaults, `proxies`
    # as `budget`, no run-level field): such shards stay current.
    assert grouped == {"budget": 700, "min_per_group": 1, "grouping": True, "space": "xyz", "feat_weight": 1.0,
                       "per_object": None, "unlabeled_cell": 2.0, "unlabeled_min_size": 8, "bfs_neighbors": 6,
                       "seed": 0, "match_iou": 0.25, "version": CLUSTER_VERSION}


class _Killed(Exception):
    pass


def test_a_killed_recluster_leaves_a_set_the_loader_refuses(tmp_path, monkeypatch):
    """A --proxies 40 set, then a --proxies 20 rerun under the same name killed after its first
    shard: the loader refuses the set instead of yielding a mix of 20 and 40 proxies."""
    import pipeline.cluster.driver as driver
    from schemas.proxy import INDEX_FILE
    from schemas.proxy import read_set_index
    from trainer.shard_reader import iter_scenes

    out = tmp_path / "data"
    _write_store(out)
    root = proxies_dir(out, "set")
    run_cluster(out, _config(name="set", proxies=40, scenes_per_shard=1))
    assert sorted(len(s["xyz"]) for s in iter_scenes(root, shuffle=False)) == [40] * NUM_SCENES
    old_index = (root / INDEX_FILE).read_bytes()
    assert json.loads(old_index)["params"]["budget"] == 40

    real_write_shard, written = driver.write_shard, []

    def write_then_die(path, samples):
        if written:
            raise _Killed(path)
        written.append(real_write_shard(path, samples))
        return written[-1]

    monkeypatch.setattr(driver, "write_shard", write_then_die)
    with pytest.raises(_Killed):
        run_cluster(out, _config(name="set", proxies=20, scenes_per_shard=1))
    monkeypatch.undo()
    assert len(written) == 1 and not (root / INDEX_FILE).exists()
    with pytest.raises(ValueError, match="no proxy index"):
        next(iter_scenes(root, shuffle=False))
    with pytest.raises(ValueError, match="no proxy index"):
        read_set_index(root)
    with pytest.raises(ValueError, match="no proxy index"):
        load_scene_proxies(out, "set", "scene01")
    # Had the old index survived (as it did before), the shards' parameters give the mix away.
    (root / INDEX_FILE).write_bytes(old_index)
    with pytest.raises(ValueError, match="other clustering parameters"):
        list(iter_scenes(root, shuffle=False))
    with pytest.raises(ValueError, match="other clustering parameters"):
        load_scene_proxies(out, "set", "scene00")
    # The rerun finishes the set: one parameter set throughout.
    run_cluster(out, _config(name="set", proxies=20, scenes_per_shard=1))
    assert sorted(len(s["xyz"]) for s in iter_scenes(root, shuffle=False)) == [20] * NUM_SCENES


def test_a_legacy_index_without_parameters_is_refused(store, tmp_path):
    from schemas.proxy import INDEX_FILE
    from trainer.shard_reader import iter_scenes

    run_cluster(store, _config(name="legacy"))
    root = proxies_dir(store, "legacy")
    (root / INDEX_FILE).write_text(json.dumps(json.loads((root / INDEX_FILE).read_text())["scenes"]))
    with pytest.raises(ValueError, match="proxy index format 1"):
        next(iter_scenes(root, shuffle=False))


def test_impossible_settings_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "data"
    _write_store(out, 1)
    result = CliRunner().invoke(app, ["cluster", "--out", str(out), "--proxies", "5",
                                      "--min-per-group", "100", "--name", "bad", "--executor", "local"])
    assert result.exit_code == 2
    assert "min-per-group" in result.output and "exceeds proxies 5" in result.output
    assert not (out / "proxies").exists()


def test_missing_chunks_fail_stats_and_cluster_naming_the_scene_and_array(tmp_path):
    import shutil

    from pipeline.features.store import scene_path

    out = tmp_path / "data"
    _write_store(out, 2)
    shutil.rmtree(scene_path(out, "scene01") / "xyz" / "c" / "3")  # one frame's chunk files
    for args in (["stats"], ["cluster", "--name", "k40", "--proxies", "40", "--executor", "local"]):
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert result.exit_code != 0, result.output
        assert "scene01" in result.output and "array xyz: 1 of 6 chunks missing" in result.output
        assert "Traceback" not in result.output


def test_a_corrupt_group_is_reported_and_fails_the_cluster_run(tmp_path):
    from pipeline.features.store import scene_path

    out = tmp_path / "data"
    _write_store(out, 2)
    meta = scene_path(out, "scene01") / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    result = CliRunner().invoke(app, ["cluster", "--out", str(out), "--name", "k40", "--proxies", "40",
                                      "--executor", "local"])
    assert result.exit_code == 1, result.output
    assert f"scene01: unreadable group metadata {meta}" in result.output
    report = json.loads(next((proxies_dir(out, "k40") / "_runs").glob("*.json")).read_text())
    assert str(meta) in report["failed"]["scene01"]
    assert json.loads((proxies_dir(out, "k40") / "index.json").read_text())["scenes"] == {
        "scene00": "shard-000000.tar"}
    result = CliRunner().invoke(app, ["stats", "--out", str(out)])
    assert result.exit_code != 0 and str(meta) in result.output


@pytest.mark.slow
def test_a_recluster_killed_by_sigkill_is_refused_by_the_loader(tmp_path):
    """The same as above with a real SIGKILL: `p3d cluster --proxies 20` over a --proxies 40 set of
    the same name, killed once its first new shard is in place."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    from schemas.proxy import INDEX_FILE
    from trainer.shard_reader import iter_scenes

    out = tmp_path / "data"
    _write_store(out, 8)
    root = proxies_dir(out, "set")
    run_cluster(out, _config(name="set", proxies=40, scenes_per_shard=1))
    first = root / "shard-000000.tar"
    old_bytes = first.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "P3D_WORKFLOW"}
    proc = subprocess.Popen([sys.executable, "-m", "p3d.cli", "cluster", "--out", str(out),
                             "--name", "set", "--proxies", "20", "--scenes-per-shard", "1", "--executor", "local"],
                            cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and first.read_bytes() == old_bytes:
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    budgets = sorted({len(s["xyz"]) for s in _read_shards(root)})
    assert budgets == [20, 40], "the kill should have left new and old shards side by side"
    assert not (root / INDEX_FILE).exists()
    with pytest.raises(ValueError, match="no proxy index"):
        next(iter_scenes(root, shuffle=False))


def _read_shards(root):
    from pipeline.cluster.shards import decode_sample, read_shard

    for shard in sorted(root.glob("shard-*.tar")):
        for scene_id, members in read_shard(shard).items():
            yield decode_sample(members, f"{shard}:{scene_id}")
