"""`p3d toy`: build the toy world, from a workflow's `source:` section (`--workflow`, else
$P3D_WORKFLOW, else the embedded workflows/toy.yaml) or, given `--out`, from the flags alone."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from schemas.cli_workflow import SET_OPTION, WORKFLOW_OPTION


def toy(
    out: Path = typer.Option(None, "--out", help="world root; scenes go to <out>/scenes"),
    scenes: int = typer.Option(None, "--scenes", min=1, help="number of scenes (default 8)"),
    frames: int = typer.Option(None, "--frames", min=1, help="frames per scene (default 48)"),
    seed: int = typer.Option(None, "--seed", help="world seed (default 0)"),
    workflow: Optional[Path] = WORKFLOW_OPTION,
    sets: Optional[list[str]] = SET_OPTION,
    workers: int = typer.Option(None, "--workers", min=1, help="rendering processes (default: one per core, "
                                                               "at most 8); the world does not depend on it"),
    force: bool = typer.Option(False, "--force", help="render even when the world on disk is current"),
) -> None:
    """Render the procedural toy world with full ground truth (ScanNet exported-frame layout); a world
    already rendered from the same config by this generator version is kept (`--force` renders it)."""
    from pipeline.toy.scenes import render_reason
    from pipeline.toy.world import TOY_WORLD_FILE, build_toy_world
    from schemas.cli_workflow import fail, open_workflow
    from schemas.workflow import ToyWorldConfig

    run = None
    if out is None:
        run = open_workflow(workflow, sets)
        wf = run.workflow
        if wf.source.kind != "toy":
            fail(f"{run.path}: source.kind is {wf.source.kind!r}, not 'toy'")
        cfg = wf.source.toy or ToyWorldConfig()
        scenes_dir = Path(wf.source.path)
        root = scenes_dir.parent
    elif workflow is not None or sets:
        raise typer.BadParameter("give --out or --workflow/--set, not both", param_hint="--out")
    else:
        typer.echo("workflow: none (--out: the toy world from the flags)")
        cfg = ToyWorldConfig()
        root = out if out is not None else Path("data/toy")
        scenes_dir = root / "scenes"
    overrides = {k: v for k, v in (("num_scenes", scenes), ("frames", frames), ("seed", seed)) if v is not None}
    cfg = cfg.model_copy(update=overrides)
    cfg = ToyWorldConfig.model_validate(cfg.model_dump())
    typer.echo(f"toy world: {cfg.num_scenes} scenes x {cfg.frames} frames, seed {cfg.seed}, "
               f"{cfg.image_size[0]}x{cfg.image_size[1]} -> {scenes_dir}")
    # Rendering again would change every scene file's mtime, which the feature stage reads as new
    # input (the source fingerprint), so a rerun after a kill (`make demo` again) would redo it all.
    if not force and (root / TOY_WORLD_FILE).is_file() and render_reason(scenes_dir, cfg) is None:
        typer.echo(f"toy world under {scenes_dir} is current ({root / TOY_WORLD_FILE}: this config, "
                   "finished): kept; --force renders it again")
        return
    summary = build_toy_world(root, scenes_dir, cfg, progress=typer.echo, workers=workers)
    if run is not None:
        run.save(root / "toy_world.workflow.yaml",
                 source=run.workflow.source.model_copy(update={"toy": cfg}))
    typer.echo(f"wrote {summary['num_scenes']} scenes and {summary['num_records']} records to {root} "
               f"in {summary['seconds']:.1f}s")


def register(app: typer.Typer) -> None:
    app.command("toy")(toy)
