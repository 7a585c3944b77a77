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

from p3d.cli import app
from pipeline.cluster.driver import run_cluster
from tests.synthetic_triplets import store_arrays, synthetic_scene
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


def _workflow(data: Path, body: str, name: str = "wf.yaml") -> None:
    (data / name).write_text(f"name: t\nout: {data}\nsource:\n  kind: toy\n  path: {data}/scenes\n" + body)


def _unknown_key(data: Path) -> None:
    _workflow(data, "cluster:\n  proxies: 10\n  proxy: 20\n")


def _broken_yaml(data: Path) -> None:
    (data / "wf.yaml").write_text("name: [t\n")


def _train_on_a_missing_set(data: Path) -> None:
    _workflow(data, "train:\n  proxies: nope\n")


def _bad_predictions(data: Path) -> None:
    (data / "preds.jsonl").write_text('{"id": "a", "scene_id": "s", "task": "qa", "text": "x"}\n'
                                      '{"id": "b", "sce\n')
    (data / "records.jsonl").write_text("")


def _records_not_json(data: Path) -> None:
    (data / "records.jsonl").write_text('{"id": "r0", "scene_id": "s", "task": "qa", "source": "x", '
                                        '"question": "q?"}\nnot json\n')


def _a_file_where_a_folder_goes(data: Path) -> None:
    (data / "afile").write_text("")


@dataclass(frozen=True)
class Case:
    id: str
    damage: Callable[[Path], None]
    args: list[str]  # {data} stands for the data root
    code: int
    message: str  # {data} as above
    changed: tuple[str, ...] = ()  # files the damage itself changes (left out of the comparison)
    verbose: bool = False  # with -v: the traceback follows the same message
    lines: int = 1  # stderr lines without -v (a cluster run lists each failed scene, then a summary)


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
         "scene01: ValueError: scene scene01: array xyz: 1 of 6 chunks missing", lines=2),
    Case("stats-corrupt-group", _corrupt_group, ["stats", "--out", "{data}"], 2,
         "scene scene01: unreadable group metadata {data}/features/scene01/zarr.json",
         changed=("features/scene01/zarr.json",)),
    Case("cluster-corrupt-group", _corrupt_group,
         ["cluster", "--out", "{data}", "--name", "other", "--proxies", "30", "--executor", "local"], 1,
         "failed: scene01: unreadable group metadata {data}/features/scene01/zarr.json",
         changed=("features/scene01/zarr.json",), lines=2),
    Case("eval-missing-predictions-verbose", _nothing,
         ["eval", "--pred", "{data}/nope.jsonl", "--records", "{data}/nope_records.jsonl", "-v"], 2,
         "error: {data}/nope.jsonl: No such file or directory", verbose=True),
    Case("workflow-unknown-key", _unknown_key, ["cluster", "--workflow", "{data}/wf.yaml"], 2,
         "error: {data}/wf.yaml:8: field 'cluster.proxy': Extra inputs are not permitted"),
    Case("workflow-broken-yaml", _broken_yaml, ["stats", "--workflow", "{data}/wf.yaml"], 2,
         "error: {data}/wf.yaml:2: invalid YAML"),
    Case("workflow-missing", _nothing, ["features", "--workflow", "{data}/nope.yaml"], 2,
         "error: {data}/nope.yaml: workflow file not found"),
    Case("set-unknown-field", _nothing, ["features", "--set", "features.bogus=1"], 2,
         "error: --set features.bogus: field 'features.bogus': Extra inputs are not permitted"),
    Case("set-without-workflow", _nothing, ["cluster", "--out", "{data}", "--set", "cluster.proxies=3"], 2,
         "error: --set changes a workflow; give --workflow (or drop --out)"),
    Case("flag-not-a-number", _nothing, ["cluster", "--out", "{data}", "--proxies", "many"], 2,
         "error: Invalid value for '--proxies'"),
    Case("unknown-command", _nothing, ["clsuter"], 2, "error: No such command 'clsuter'"),
    Case("inspect-missing-tar", _nothing, ["inspect", "{data}/nope.tar"], 2,
         "error: {data}/nope.tar: no such shard file"),
    Case("inspect-unknown-scene", _nothing, ["inspect", "nowhere", "--out", "{data}", "--name", "good"], 2,
         "nowhere"),
    Case("viz-unknown-scene", _nothing, ["viz", "nowhere", "--out", "{data}", "--name", "good"], 2,
         "nowhere"),
    Case("train-missing-proxy-set", _train_on_a_missing_set,
         ["train", "--stage", "1", "--workflow", "{data}/wf.yaml"], 2,
         "error: train.proxies: proxy set 'nope' not found"),
    Case("predict-not-a-checkpoint", _nothing,
         ["predict", "--checkpoint", "{data}/features", "--shards", "{data}/proxies/good", "--records",
          "{data}/r.jsonl", "--out", "{data}/p.jsonl"], 2, "{data}/features: not a p3d checkpoint"),
    Case("eval-bad-prediction-line", _bad_predictions,
         ["eval", "--pred", "{data}/preds.jsonl", "--records", "{data}/records.jsonl"], 2,
         "error: {data}/preds.jsonl:2: invalid JSON"),
    Case("dataset-stats-bad-line", _records_not_json, ["dataset", "stats", "{data}/records.jsonl"], 2,
         "error: {data}/records.jsonl:2: invalid JSON"),
    Case("convert-missing-file", _nothing,
         ["convert", "scanqa", "{data}/nope.json", "--out", "{data}/r.jsonl"], 2,
         "files not found: {data}/nope.json"),
    Case("convert-a-folder", _nothing, ["convert", "scanqa", "{data}/features", "--out", "{data}/r.jsonl"], 2,
         "error: {data}/features: Is a directory"),
    Case("toy-out-is-a-file", _a_file_where_a_folder_goes,
         ["toy", "--out", "{data}/afile", "--scenes", "1"], 2, "error: {data}/afile/scenes: Not a directory"),
    Case("stats-nothing-there", _nothing, ["stats", "--out", "{data}/empty"], 2, "no complete scenes"),
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
    assert ("Traceback" in result.output) == case.verbose, result.output
    if not case.verbose:  # the message is the whole of stderr, on one line
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == case.lines, result.stderr
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


def test_a_bug_prints_its_traceback_and_says_so(tmp_path, monkeypatch):
    """An exception that is not bad input (here a KeyError inside `dataset stats`) is a bug: its
    traceback is printed without -v, the last line says it is p3d's, exit 1."""
    import pipeline.eval.stats

    def broken(_records):
        raise KeyError("task")

    monkeypatch.setattr(pipeline.eval.stats, "record_stats", broken)
    records = tmp_path / "records.jsonl"
    records.write_text("")
    result = CliRunner().invoke(app, ["dataset", "stats", str(records)])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and 'raise KeyError("task")' in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unexpected KeyError: 'task' (a bug in p3d")


def test_report_codes_and_lines():
    import errno

    from schemas.cli_errors import EXIT_BUG, EXIT_INPUT, report
    from schemas.workflow import Workflow

    def shown(exc: BaseException, verbose: bool = False) -> tuple[int, list[str]]:
        lines: list[str] = []
        try:
            raise exc
        except BaseException as e:  # raised, so that it has a traceback to show
            return report(e, verbose, echo=lines.append), lines

    assert shown(ValueError("a.yaml:3: field 'x': expected\n an int")) == (EXIT_INPUT, [
        "error: a.yaml:3: field 'x': expected an int"])
    try:
        Workflow.model_validate({"name": "w"})
    except ValueError as e:
        invalid = e
    assert shown(invalid) == (EXIT_INPUT, ["error: Workflow: field 'out': Field required; field 'source': "
                                           "Field required"])
    assert shown(OSError(errno.ENOSPC, "No space left on device", "/data/x")) == (
        EXIT_BUG, ["error: /data/x: No space left on device"])  # the machine's problem: no traceback
    code, lines = shown(ValueError("bad"), verbose=True)
    assert code == EXIT_INPUT and lines[0].startswith("Traceback") and lines[-1] == "error: bad"


def test_trainer_entry_errors(tmp_path, monkeypatch, capsys):
    """trainer/run.py (what `deepspeed trainer/run.py` runs) ends errors as `p3d` does."""
    import trainer.train
    from trainer import run

    with pytest.raises(SystemExit) as exit_info:
        run.main(["--stage", "1", "--workflow", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"error: {tmp_path / 'nope.yaml'}: workflow file not found\n"

    def refuse(*_args):
        raise ValueError(f"{tmp_path}/records.jsonl:7: field 'answers': expected a list")

    monkeypatch.setattr(trainer.train, "check_stage_inputs", refuse)
    for verbose in (False, True):
        with pytest.raises(SystemExit) as exit_info:
            run.main(["--stage", "1", "--out", str(tmp_path / "runs")] + ["-v"] * verbose)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        expected = f"error: {tmp_path}/records.jsonl:7: field 'answers': expected a list"
        assert err.strip().splitlines()[-1] == expected
        assert ("Traceback" in err) == verbose
