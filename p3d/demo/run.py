"""The demo's chain: toy world -> features -> cluster -> train stages 1-4 -> predict (held-out split)
-> eval -> viz and view, the ablations (p3d/demo/ablations.py) and `p3d ask` on a held-out scene
(p3d/demo/ask.py). The data steps skip what they already hold (the stages' own resume), so a second
`make demo` redoes the toy world, features and clusters only where they changed; the training stages
run afresh every time, as a stage's checkpoint records its settings but not its inputs (the proxies,
the previous stage's model), and resuming one after those changed would keep a stale model.

After stage 3 the main stage 4 and the variants' stage 4s are independent, so they run side by
side (p3d/demo/steps.py: run_side_by_side).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from p3d.demo.ablations import (
    ORACLE_VARIANT,
    ablation_variants,
    positions_variant,
    prepare_ablations,
    repeats_main_run,
    runs_oracle,
)
from p3d.demo.result import DemoResult
from p3d.demo.steps import DemoRun, p3d_command, records_path, run_side_by_side, train_command, val_scenes
from schemas import layout
from schemas.workflow import Workflow, load_workflow


def _stage4_and_scores(demo: DemoRun, label: str, wf_path: Path, wf: Workflow, records: Path,
                       out_dir: Path, job: str | None = None, threads: int | None = None) -> dict:
    """Stage 4 of a workflow, its predictions on the held-out split and their scores."""
    demo.run("train stage 4" + ("" if label == "main" else f" {label}"), train_command(4, wf_path), job, threads)
    paths = layout.Layout.of(wf)
    checkpoint = paths.stage_model(4)
    preds, scores = out_dir / layout.PREDICTIONS_FILE, out_dir / layout.EVAL_FILE
    demo.run(f"predict {label}", p3d_command(
        "predict", "--checkpoint", str(checkpoint), "--shards", str(paths.proxies(wf.train.proxies)),
        "--records", str(records), "--out", str(preds), "--split", wf.eval.split,
        "--batch-size", str(wf.eval.batch_size), "--max-new-tokens", str(wf.eval.max_new_tokens),
        "--mbr-tasks", ",".join(wf.eval.mbr_tasks), "--mbr-samples", str(wf.eval.mbr_samples)), job, threads)
    demo.run(f"eval {label}", p3d_command(
        "eval", "--task", "all", "--pred", str(preds), "--records", str(records), "--json", str(scores),
        "--boxes", str(Path(wf.source.path)), "--split", wf.eval.split), job, threads)
    return json.loads(scores.read_text())


def run_demo(workflow_path: str | Path, skip_ablations: bool = False) -> DemoResult:
    """Run the whole chain; the result is what the report (p3d/report.py) shows."""
    workflow_path = Path(workflow_path)
    wf = load_workflow(workflow_path)
    run_dir = layout.Layout.of(wf).run_dir
    demo = DemoRun(workflow_path, wf, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if wf.source.kind == "toy":
        demo.run("toy world", p3d_command("toy", "--workflow", str(workflow_path)))
    demo.run("features", p3d_command("features", "--workflow", str(workflow_path)))
    demo.run("stats", p3d_command("stats", "--workflow", str(workflow_path)))
    demo.run("cluster", p3d_command("cluster", "--workflow", str(workflow_path)))
    with_ablations = wf.demo.ablations.enabled and not skip_ablations

    def stages_1_to_3(job: str | None, threads: int | None) -> None:
        demo.run("train stage 1", train_command(1, workflow_path), job, threads)
        # Every core: the variants' preparation (~180 s) ends during stage 1 (~250 s), measured:
        # docs/RESULTS.md#demo-runtime; if not, the two share the cores for a while, nothing worse.
        for stage in (2, 3):
            demo.run(f"train stage {stage}", train_command(stage, workflow_path), job)

    # The variants' features and clusters need no model: they run beside stages 1-3, whose tiny
    # model gains little from a second thread. measured: docs/RESULTS.md#demo-parallel-jobs
    before_stage4: dict[str, Callable[[str | None, int | None], object]] = {"stages 1-3": stages_1_to_3}
    if with_ablations:
        before_stage4["ablations"] = lambda job, threads: prepare_ablations(
            demo, layout.Layout.of(wf).stage_model(3), job, threads)
    prepared = run_side_by_side(demo, before_stage4, wf.demo.jobs)
    variants, repeats = prepared["ablations"] if with_ablations else ([], [])

    def main_job(job: str | None, threads: int | None) -> tuple[dict, list[Path], dict | None]:
        # The pictures and `p3d ask` need only the main stage-4 model and predictions: they run in
        # its slot, while the variants still train, not after every job has ended.
        # measured: docs/RESULTS.md#demo-runtime
        from p3d.demo.ask import ask_held_out

        scores = _stage4_and_scores(demo, "main", workflow_path, wf, records_path(wf),
                                    run_dir / layout.DEMO_MAIN, job, threads)
        pictures = _pictures(demo, job, threads)
        shown = val_scenes(wf, 1)
        asked = (ask_held_out(demo, wf, records_path(wf), shown[0], p3d_command, job, threads)
                 if shown and wf.source.kind == "toy" else None)
        return scores, pictures, asked

    jobs: dict[str, Callable[[str | None, int | None], object]] = {"main": main_job}
    for v in variants:
        jobs[v.name] = lambda job, threads, v=v: _stage4_and_scores(demo, v.name, v.workflow_path, v.workflow,
                                                                    v.records, v.out_dir, job, threads)
    scores = run_side_by_side(demo, jobs, wf.demo.jobs)
    main, pictures, asked = scores["main"]  # type: ignore[misc]
    scores["main"] = main
    ablations, positions = _ablation_tables(wf, scores, repeats) if with_ablations else ({}, {})
    return DemoResult(
        workflow_path, wf, run_dir, main, sorted(demo.steps, key=lambda s: s.started), demo.wall_seconds,
        ablations=ablations, positions=positions, pictures=pictures, asked=asked,
        main_clustering_variant=f"grouping-k{wf.demo.ablations.grouping_budget or wf.cluster.proxies}",
        oracle_variant=ORACLE_VARIANT if runs_oracle(wf) else None,
        reuses_main_run=any(repeats_main_run(wf, change) for _, change in ablation_variants(wf)))


def _ablation_tables(wf: Workflow, scores: dict[str, object], repeats: list[str]
                     ) -> tuple[dict[str, dict], dict[str, dict]]:
    """The ablation table's rows and the rotary-position table's, from each job's scores; a variant
    that repeats the main run shows the main run's scores on the ablation's tasks."""
    main = scores["main"]
    assert isinstance(main, dict)
    ablations: dict[str, dict] = {}
    tasks = wf.demo.ablations.tasks
    names = [name for name, _ in ablation_variants(wf)] + ([ORACLE_VARIANT] if runs_oracle(wf) else [])
    positions: dict[str, dict] = {}
    positions_name, positions_change = positions_variant(wf)
    for name in names:
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
    return ablations, positions


def _pictures(demo: DemoRun, job: str | None = None, threads: int | None = None) -> list[Path]:
    """`p3d viz` and `p3d view` of the first held-out scenes (`demo.viz_scenes`)."""
    wf, run_dir, workflow_path = demo.workflow, demo.run_dir, demo.workflow_path
    pictures = []
    for scene_id in val_scenes(wf, wf.demo.viz_scenes):
        png = layout.scene_picture(run_dir, scene_id)
        demo.run(f"viz {scene_id}", p3d_command("viz", scene_id, "--workflow", str(workflow_path),
                                                "--png", str(png)), job, threads)
        demo.run(f"view {scene_id}", p3d_command(
            "view", scene_id, "--workflow", str(workflow_path),
            "--predictions", str(run_dir / layout.DEMO_MAIN / layout.PREDICTIONS_FILE),
            "--html", str(layout.scene_page(run_dir, scene_id))), job, threads)
        pictures.append(png)
    return pictures
