"""Bad input, one row each: the command, its exit code, the one line it must print (no traceback),
and that the good outputs already on disk (a triplet store and a proxy set) did not change."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cluster.driver import run_cluster
from pipeline.cluster.synthetic import store_arrays, synthetic_scene
from pipeline.features.store import scene_path, write_scene
from schemas.config_cluster import ClusterConfig
from schemas.store import ModelRef, StoreAttrs

NUM_SCENES = 2


def _attrs(scene_id: str, objects: list[dict]) -> StoreAttrs:
    ref = ModelRef(kind="synthetic", trained=False)
    return StoreAttrs(scene_id=scene_id, source={"kind": "synthetic"}, encoder=ref, geometry=ref,
                      segmenter=ref, frame_indices=list(range(6)), image_size=[224, 280], patch_size=28, grid=[8, 10],
                      objects=objects, pipeline_version="test")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A data root with a whole store and a finished proxy set `good`."""
    out = tmp_path_factory.mktemp("good")
    for i in range(NUM_SCENES):
        scene = synthetic_scene(num_frames=6, h=8, w=10, dim=16, num_objects=8, seed=i)
        write_scene(out, _attrs(f"scene{i:02d}", scene.objects), store_arrays(scene))
    run_cluster(out, ClusterConfig(name="good", proxies=30, scenes_per_shard=1, executor="local"))
    return out


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the damage each row starts from
def _nothing(data: Path) -> None:
    pass


def _duplicate_key(data: Path) -> None:
    (data / "dup.yaml").write_text(f"name: dup\nout: {data}\ncluster:\n  proxies: 10\n"
                                   "features:\n  num_frames: 4\ncluster:\n  proxies: 20\n")


def _missing_chunk(data: Path) -> None:
    shutil.rmtree(scene_path(data, "scene01") / "xyz" / "c" / "3")  # one frame's chunk files


def _corrupt_group(data: Path) -> None:
    meta = scene_path(data, "scene01") / "zarr.json"
    meta.write_text(meta.read_text()[:40])


def _truncated_tar(data: Path) -> None:
    shard = data / "proxies" / "good" / "shard-000000.tar"
    (data / "trunc.tar").write_bytes(shard.read_bytes()[:3000])


@dataclass(frozen=True)
class Case:
    id: str
    damage: Callable[[Path], None]
    args: list[str]  # {data} stands for the data root
    code: int
    message: str  # {data} as above
    changed: tuple[str, ...] = ()  # files the damage itself changes (left out of the comparison)


CASES = [
    Case("workflow-duplicate-key", _duplicate_key, ["cluster", "--workflow", "{data}/dup.yaml"], 2,
         "{data}/dup.yaml:7: invalid YAML: duplicate key 'cluster' (first on line 3, again on line 7)"),
    Case("cluster-min-per-group-over-budget", _nothing,
         ["cluster", "--out", "{data}", "--proxies", "5", "--min-per-group", "100", "--name", "bad"], 2,
         "--min-per-group: min_per_group 100 exceeds proxies 5"),
    Case("cluster-min-per-group-over-budget-same-set", _nothing,
         ["cluster", "--out", "{data}", "--proxies", "5", "--min-per-group", "100", "--name", "good"], 2,
         "--min-per-group: min_per_group 100 exceeds proxies 5"),
    Case("eval-missing-predictions", _nothing,
         ["eval", "--pred", "{data}/nope.jsonl", "--records", "{data}/nope_records.jsonl"], 2, "{data}/nope"),
    Case("dataset-stats-missing-records", _nothing, ["dataset", "stats", "{data}/nope.jsonl"], 2,
         "error: {data}/nope.jsonl: records file not found"),
    Case("inspect-truncated-tar", _truncated_tar, ["inspect", "{data}/trunc.tar"], 2,
         "error: {data}/trunc.tar: unreadable shard tar"),
    Case("stats-missing-chunk", _missing_chunk, ["stats", "--out", "{data}"], 2,
         "scene scene01: array xyz: 1 of 6 chunks missing"),
    Case("cluster-missing-chunk", _missing_chunk,
         ["cluster", "--out", "{data}", "--name", "other", "--proxies", "30", "--executor", "local"], 1,
         "scene01: ValueError: scene scene01: array xyz: 1 of 6 chunks missing"),
    Case("stats-corrupt-group", _corrupt_group, ["stats", "--out", "{data}"], 2,
         "scene scene01: unreadable group metadata {data}/features/scene01/zarr.json",
         changed=("features/scene01/zarr.json",)),
    Case("cluster-corrupt-group", _corrupt_group,
         ["cluster", "--out", "{data}", "--name", "other", "--proxies", "30", "--executor", "local"], 1,
         "failed: scene01: unreadable group metadata {data}/features/scene01/zarr.json",
         changed=("features/scene01/zarr.json",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, good: Path, tmp_path: Path, monkeypatch):
    from schemas.workflow import WORKFLOW_ENV

    monkeypatch.delenv(WORKFLOW_ENV, raising=False)
    data = tmp_path / "data"
    shutil.copytree(good, data)
    case.damage(data)
    before = {k: v for k, v in _snapshot(data).items() if k not in case.changed}
    result = CliRunner().invoke(app, [a.replace("{data}", str(data)) for a in case.args])
    assert result.exit_code == case.code, result.output
    assert case.message.replace("{data}", str(data)) in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    after = _snapshot(data)
    assert {k: after.get(k) for k in before} == before, "a good output changed"


def test_a_duplicate_key_anywhere_names_both_lines(tmp_path):
    from schemas.errors import SchemaError
    from schemas.workflow import load_workflow

    path = tmp_path / "wf.yaml"
    path.write_text(f"name: x\nout: {tmp_path}\nfeatures:\n  num_frames: 4\n  image_size: [56, 84]\n"
                    "  num_frames: 8\n")
    with pytest.raises(SchemaError, match=r"wf.yaml:6: invalid YAML: duplicate key 'num_frames' \(first on "
                                          r"line 4, again on line 6\)"):
        load_workflow(path)
    path.write_text(f"name: x\nout: {tmp_path}\nsource:\n  kind: toy\n  path: {tmp_path}\n"
                    "cluster:\n  name: y\n")  # one key at two levels: fine
    assert load_workflow(path).cluster.name == "y"
