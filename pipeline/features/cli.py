"""`p3d features`: run encoder, geometry and segmenter over a workflow's scenes into the triplet store.

The run's resolved workflow is saved beside its report: `<out>/features/_runs/<time>.workflow.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from schemas.cli_workflow import SCENES_OPTION, SET_OPTION, WORKFLOW_OPTION, scene_list


def features(
    workflow: Optional[Path] = WORKFLOW_OPTION,
    sets: Optional[list[str]] = SET_OPTION,
    out: Path = typer.Option(None, "--out", help="data root; groups go to <out>/features (default: workflow out)"),
    scenes: Optional[list[str]] = SCENES_OPTION,
    frames: int = typer.Option(None, "--frames", min=1, help="frames per scene (default: features.num_frames)"),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="ray | local (default: features.executor)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="redo scenes that are already complete"),
) -> None:
    """Write patch-aligned (feature, point, label) triplets per scene; exits 1 if any scene failed."""
    from pipeline.features.driver import run_features
    from pipeline.features.scenes import open_workflow_source
    from pipeline.sources import SceneReadError, prepare_source
    from schemas.cli_workflow import fail, missing_source, open_workflow

    if executor not in (None, "ray", "local"):
        raise typer.BadParameter(f"unknown executor {executor!r}; choose ray or local", param_hint="--executor")
    run = open_workflow(workflow, sets)
    wf = run.workflow
    updates = {"num_frames": frames, "executor": executor}
    cfg = wf.features.model_copy(update={k: v for k, v in updates.items() if v is not None})
    out_root = out if out is not None else Path(wf.out)
    ids = scene_list(scenes)
    prepare_source(wf.source, echo=typer.echo)
    if not Path(wf.source.path).exists():
        fail(missing_source(run, "nothing at"))
    try:
        source = open_workflow_source(wf, cfg.num_frames, ids)
        scene_ids = source.scene_ids()
    except SceneReadError as e:
        fail(str(e))
    if not scene_ids:
        fail(missing_source(run, "no scene folders under"))
    # Models named `toy:` or `random:` are built under the workflow's data root (pipeline/models/resolve.py).
    report = run_features(cfg, out_root, Path(wf.out), source, scene_ids=scene_ids, overwrite=overwrite)
    if report.path is not None:
        run.save(report.path.with_suffix(".workflow.yaml"), features=cfg, out=str(out_root))
    typer.echo(f"features: {len(report.done)} done, {len(report.skipped)} skipped, {len(report.failed)} failed "
               f"in {report.wall_seconds:.1f}s; report {report.path}")
    if report.failed:
        for scene_id, reason in report.failed.items():
            typer.echo(f"  FAILED {scene_id}: {reason}", err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("features")(features)
