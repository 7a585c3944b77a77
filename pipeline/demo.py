"""`p3d demo`: the whole chain on one workflow, then a report with the metric and ablation tables.

toy world -> features -> cluster -> train stages 1-4 -> predict (held-out split) -> eval -> viz,
then the paper's ablations in miniature: semantic grouping versus `--no-grouping`, proxy
budgets, and the layout of the proxies' rotary position ids (`train.rope_positions`: the main
run's proxy set, stage 4 with the other layout, scored also on the tasks stage 4 replays). Every
step runs the same command a user would type (`p3d ...`, `python trainer/run.py`), as a child
process whose output streams to the console and to `<runs>/<name>/logs/<step>.log`, so
the demo proves the commands, not a private shortcut. Steps whose outputs exist are skipped by the
stages themselves (resume), so a second `make demo` only redoes what changed.

Each ablation variant is a derived workflow file (`<runs>/<name>/ablations/<variant>.yaml`): its own
proxy set, and a stage-4 run from the main stage-3 model on the same tasks and epochs, so the
variants differ only in the clustering. A variant that would repeat the main run exactly (same
clustering, and the main stage 4 has the ablation's tasks and epochs) takes the main run's scores
instead of training the same thing twice.

After stage 3 the main stage 4 and the variants' stage 4s are independent, so they run side by
side (`demo.jobs` at a time, the cores split among them; each console line then starts with its
job's name). A tiny model gains little from a second intra-op thread
(measured: docs/RESULTS.md#demo-parallel-jobs), so two 1-thread jobs finish sooner than the same two in turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from schemas import layout
from schemas.config_train import ROPE_POSITIONS
from schemas.workflow import Workflow, load_workflow

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    argv: list[str]
    seconds: float = 0.0
    started: float = 0.0  # seconds into the demo


@dataclass
class DemoRun:
    workflow_path: Path
    workflow: Workflow
    run_dir: Path
    steps: list[Step] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _numbered: int = 0

    @property
    def log_dir(self) -> Path:
        return self.run_dir / layout.DEMO_LOGS

    @property
    def wall_seconds(self) -> float:
        return time.time() - self.started

    def _say(self, text: str, job: str | None) -> None:
        with self._lock:
            if job is None:
                sys.stdout.write(text)
            else:
                sys.stdout.write("".join(f"[{job}] {line}" for line in text.splitlines(keepends=True)))
            sys.stdout.flush()

    def run(self, name: str, argv: list[str], job: str | None = None, threads: int | None = None) -> None:
        """Run one step as a child process, streaming its output; stop the demo if it fails.
        A step of a job that runs beside others (`job`) prefixes its console lines with the job's
        name, and its child uses `threads` intra-op threads."""
        with self._lock:
            self._numbered += 1
            number = self._numbered
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{number - 1:02d}-{name.replace(' ', '_').replace('/', '_')}.log"
        t0 = time.time()
        self._say(f"\n=== [{number}] {name}  (demo at {t0 - self.started:.0f}s)\n$ {' '.join(argv)}\n", job)
        with log_path.open("w") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, env=_child_env(threads), bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                self._say(line, job)
                log.write(line)
            code = proc.wait()
        step = Step(name, argv, time.time() - t0, t0 - self.started)
        with self._lock:
            self.steps.append(step)
        if code != 0:
            raise SystemExit(f"demo step '{name}' failed (exit {code}); log: {log_path}")
        self._say(f"=== {name}: done in {step.seconds:.1f}s\n", job)


def _child_env(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run_side_by_side(demo: DemoRun, jobs: dict[str, Callable[[str | None, int | None], object]],
                     workers: int | None = None) -> dict[str, object]:
    """Run independent jobs `workers` at a time (default: one per core), the cores split among
    them; each job is called with its console label and thread count. A failing job does not stop
    the others; once all have ended, the failures are raised together."""
    cores = os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(jobs)))
    threads = max(1, cores // workers) if workers > 1 else None
    results: dict[str, object] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(job, name if workers > 1 else None, threads): name for name, job in jobs.items()}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except (Exception, SystemExit) as e:
                failures.append(f"{futures[future]}: {e}")
    if failures:
        raise SystemExit("; ".join(failures))
    return results


def _p3d(*args: str) -> list[str]:
    return [sys.executable, "-m", "p3d.cli", *args]


def _train(stage: int, workflow: Path) -> list[str]:
    return [sys.executable, str(ROOT / "trainer" / "run.py"), "--stage", str(stage), "--workflow", str(workflow)]


def _records_path(wf: Workflow) -> Path:
    """The records scored by the demo: eval's own, else the workflow's (schemas/layout.py's order)."""
    return layout.records_path(wf, wf.eval.records)


def _val_scenes(wf: Workflow, limit: int) -> list[str]:
    scenes: list[str] = []
    for line in _records_path(wf).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == wf.eval.split and rec["scene_id"] not in scenes:
            scenes.append(rec["scene_id"])
    return scenes[:limit]


def _write_workflow(wf: Workflow, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(wf.model_dump(mode="json"), sort_keys=False))
    load_workflow(path)  # the derived file must validate like a hand-written one
    return path


def _filtered_records(wf: Workflow, tasks: list[str], path: Path) -> Path:
    lines = [ln for ln in _records_path(wf).read_text().splitlines() if json.loads(ln)["task"] in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _stage4_and_scores(demo: DemoRun, label: str, wf_path: Path, wf: Workflow, records: Path,
                       out_dir: Path, job: str | None = None, threads: int | None = None) -> dict:
    """Stage 4 of a workflow, its predictions on the held-out split and their scores."""
    demo.run("train stage 4" + ("" if label == "main" else f" {label}"), _train(4, wf_path), job, threads)
    paths = layout.Layout.of(wf)
    checkpoint = paths.stage_model(4)
    preds, scores = out_dir / layout.PREDICTIONS_FILE, out_dir / layout.EVAL_FILE
    demo.run(f"predict {label}", _p3d("predict", "--checkpoint", str(checkpoint),
                                      "--shards", str(paths.proxies(wf.train.proxies)),
                                      "--records", str(records), "--out", str(preds),
                                      "--split", wf.eval.split, "--batch-size", str(wf.eval.batch_size),
                                      "--max-new-tokens", str(wf.eval.max_new_tokens)), job, threads)
    demo.run(f"eval {label}", _p3d("eval", "--task", "all", "--pred", str(preds), "--records", str(records),
                                   "--json", str(scores), "--boxes", str(Path(wf.source.path)),
                                   "--split", wf.eval.split), job, threads)
    return json.loads(scores.read_text())


def positions_variant(wf: Workflow) -> tuple[str, dict]:
    """The main run's clustering with the other rotary position layout (trainer/positions.py)."""
    other = next(p for p in ROPE_POSITIONS if p != wf.train.rope_positions)
    return (f"positions-{other}-k{wf.cluster.proxies}",
            {"proxies": wf.cluster.proxies, "grouping": wf.cluster.grouping, "rope_positions": other})


def ablation_variants(wf: Workflow) -> list[tuple[str, dict]]:
    ab = wf.demo.ablations
    pair_budget = ab.grouping_budget or wf.cluster.proxies
    variants = [(f"grouping-k{pair_budget}", {"proxies": pair_budget, "grouping": True}),
                (f"no-grouping-k{pair_budget}", {"proxies": pair_budget, "grouping": False})]
    for k in ab.budgets:
        if k != pair_budget:
            variants.append((f"grouping-k{k}", {"proxies": k, "grouping": True}))
    return [*variants, positions_variant(wf)]


def main_clustering(wf: Workflow, change: dict) -> bool:
    return change["proxies"] == wf.cluster.proxies and change["grouping"] == wf.cluster.grouping


def repeats_main_run(wf: Workflow, change: dict) -> bool:
    """Would this variant train exactly what the main chain trained (module docstring)?"""
    ab, main4 = wf.demo.ablations, wf.train.stage(4)
    return (main_clustering(wf, change)
            and change.get("rope_positions", wf.train.rope_positions) == wf.train.rope_positions
            and main4 is not None and main4.init_from is None and main4.records is None
            and main4.epochs == ab.epochs and main4.tasks is not None
            and sorted(main4.tasks) == sorted(ab.tasks))


@dataclass
class Variant:
    """One ablation variant, clustered and ready for its stage 4."""
    name: str
    workflow_path: Path
    workflow: Workflow
    records: Path
    out_dir: Path


ORACLE_BACKENDS = {"geometry": {"kind": "rgbd"}, "segmenter": {"kind": "instances"}}
ORACLE_VARIANT = "oracle-rgbd+instances"


def runs_oracle(wf: Workflow) -> bool:
    """Does the demo add the oracle variant? Only when asked and when the main run is not already
    on the oracle backends (sensor depth and poses, ground-truth instance masks)."""
    return wf.demo.ablations.oracle and not (wf.features.geometry.kind == "rgbd"
                                             and wf.features.segmenter.kind == "instances")


def _oracle_changes(wf: Workflow) -> dict:
    """The oracle variant's own data root and features: the same scenes through `rgbd` + `instances`.
    A `toy:` model id resolves against the data root, so it is pinned to the main run's folder:
    the oracle's features then come from the same vision tower as the main run's."""
    from pipeline.models.toy_models import is_toy_id, toy_model_dir

    def pinned(model: str) -> str:
        return str(toy_model_dir(model, wf.out)) if is_toy_id(model) else model

    features = wf.features.model_dump(mode="json")
    features["encoder"]["model"] = pinned(wf.features.encoder.model)
    for section, backend in ORACLE_BACKENDS.items():
        features[section] = {**features[section], **backend}
    return {"out": str(Path(wf.out) / "oracle"), "features": features, "model": pinned(wf.train.model)}


def _variant_workflow(wf: Workflow, name: str, change: dict, stage3_model: Path, records: Path,
                      ab_dir: Path, oracle: dict | None = None) -> Workflow:
    ab = wf.demo.ablations
    change = dict(change)
    rope_positions = change.pop("rope_positions", wf.train.rope_positions)
    # A variant of training alone reads the main run's proxy set; one of the clustering its own.
    own_set = oracle is not None or not main_clustering(wf, change)
    cluster = wf.cluster.model_copy(update={"name": f"ablation-{name}", **change}) if own_set else wf.cluster
    stage4 = {"stage": 4, "trainable": ["projector", "position", "identifiers", "language_model"],
              "epochs": ab.epochs, "init_from": str(stage3_model), "records": str(records),
              "tasks": list(ab.tasks)}
    listed = wf.train.stage(4)
    if listed is not None:
        stage4 = listed.model_copy(update={k: stage4[k] for k in ("epochs", "init_from", "records", "tasks")}
                                   ).model_dump()
    train = {**wf.train.model_dump(), "proxies": cluster.name, "out": str(ab_dir / name / "train"),
             "records": str(records), "rope_positions": rope_positions,
             "stages": [s.model_dump() for s in wf.train.stages if s.stage != 4] + [stage4]}
    data = {**wf.model_dump(), "name": f"{wf.name}-{name}", "cluster": cluster.model_dump(), "train": train}
    if oracle is not None:
        data.update(out=oracle["out"], features=oracle["features"])
        train["model"] = oracle["model"]
    return Workflow.model_validate(data)


def prepare_ablations(demo: DemoRun, stage3_model: Path) -> tuple[list[Variant], list[str]]:
    """Write each variant's workflow and cluster it (one at a time: clustering is quick and spreads
    over the cores itself); the oracle variant first computes its own features. Returns the
    variants to train and the names of those that repeat the main run."""
    wf = demo.workflow
    ab = wf.demo.ablations
    ab_dir = demo.run_dir / layout.DEMO_ABLATIONS
    # Every variant trains what the main stage 4 replays beside the ablation's tasks; only the
    # position-id variant is also scored on them (the spatial tasks, where positions should count).
    main4 = wf.train.stage(4)
    replayed = [t for t in (main4.replay_tasks if main4 else []) if t not in ab.tasks]
    records = _filtered_records(wf, [*ab.tasks, *replayed], ab_dir / "records.jsonl")
    scored = _filtered_records(wf, ab.tasks, ab_dir / "scored_records.jsonl") if replayed else records
    positions_name = positions_variant(wf)[0]
    variants: list[Variant] = []
    repeats: list[str] = []
    planned = [(name, change, None) for name, change in ablation_variants(wf)]
    if runs_oracle(wf):
        main_clustering = {"proxies": wf.cluster.proxies, "grouping": wf.cluster.grouping}
        planned.append((ORACLE_VARIANT, main_clustering, _oracle_changes(wf)))
    for name, change, oracle in planned:
        if oracle is None and repeats_main_run(wf, change):
            repeats.append(name)
            continue
        variant = _variant_workflow(wf, name, change, stage3_model, records, ab_dir, oracle)
        path = _write_workflow(variant, ab_dir / f"{name}.yaml")
        if oracle is not None:
            demo.run(f"features {name}", _p3d("features", "--workflow", str(path)))
        if variant.train.proxies != wf.train.proxies:
            demo.run(f"cluster {name}", _p3d("cluster", "--workflow", str(path)))
        variants.append(Variant(name, path, variant, records if name == positions_name else scored,
                                ab_dir / name))
    return variants, repeats


def run_demo(workflow_path: str | Path, skip_ablations: bool = False) -> Path:
    workflow_path = Path(workflow_path)
    wf = load_workflow(workflow_path)
    run_dir = layout.Layout.of(wf).run_dir
    demo = DemoRun(workflow_path, wf, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if wf.source.kind == "toy":
        demo.run("toy world", _p3d("toy", "--workflow", str(workflow_path)))
    demo.run("features", _p3d("features", "--workflow", str(workflow_path)))
    demo.run("stats", _p3d("stats", "--workflow", str(workflow_path)))
    demo.run("cluster", _p3d("cluster", "--workflow", str(workflow_path)))
    for stage in (1, 2, 3):
        demo.run(f"train stage {stage}", _train(stage, workflow_path))
    with_ablations = wf.demo.ablations.enabled and not skip_ablations
    variants, repeats = [], []
    if with_ablations:
        variants, repeats = prepare_ablations(demo, layout.Layout.of(wf).stage_model(3))
    jobs: dict[str, Callable[[str | None, int | None], object]] = {
        "main": lambda job, threads: _stage4_and_scores(demo, "main", workflow_path, wf, _records_path(wf),
                                                        run_dir / layout.DEMO_MAIN, job, threads)}
    for v in variants:
        jobs[v.name] = lambda job, threads, v=v: _stage4_and_scores(demo, v.name, v.workflow_path, v.workflow,
                                                                    v.records, v.out_dir, job, threads)
    scores = run_side_by_side(demo, jobs, wf.demo.jobs)
    main = scores["main"]
    assert isinstance(main, dict)
    ablations: dict[str, dict] = {}
    tasks = wf.demo.ablations.tasks
    names = [name for name, _ in ablation_variants(wf)] + ([ORACLE_VARIANT] if runs_oracle(wf) else [])
    positions: dict[str, dict] = {}
    positions_name, positions_change = positions_variant(wf)
    for name in names if with_ablations else []:
        if name == positions_name:  # its own table: the main run beside it, on the tasks it scored
            variant = scores[name]
            assert isinstance(variant, dict)
            scored = {r["name"] for r in variant["results"]}
            positions = {f"{wf.train.rope_positions} (main)": {
                **main, "results": [r for r in main["results"] if r["name"] in scored]},
                positions_change["rope_positions"]: variant}
        elif name in repeats:  # the main run's scores on the ablation's tasks
            ablations[name] = {**main, "results": [r for r in main["results"] if r["name"].split("/")[-1] in tasks]}
        else:
            ablations[name] = scores[name]  # type: ignore[assignment]
    pictures = []
    for scene_id in _val_scenes(wf, wf.demo.viz_scenes):
        png = layout.scene_picture(run_dir, scene_id)
        demo.run(f"viz {scene_id}", _p3d("viz", scene_id, "--workflow", str(workflow_path), "--png", str(png)))
        demo.run(f"view {scene_id}", _p3d("view", scene_id, "--workflow", str(workflow_path), "--predictions",
                                          str(run_dir / layout.DEMO_MAIN / layout.PREDICTIONS_FILE), "--html",
                                          str(layout.scene_page(run_dir, scene_id))))
        pictures.append(png)
    from pipeline.ask.demo import ask_held_out
    from pipeline.report import write_report

    shown = _val_scenes(wf, 1)
    asked = ask_held_out(demo, wf, _records_path(wf), shown[0], _p3d) if shown and wf.source.kind == "toy" else None
    report = write_report(demo, main, ablations, pictures, positions, asked=asked)
    print(f"\nreport: {report}  (whole demo {demo.wall_seconds:.0f}s)")
    return report
