"""CLI verbs of the trainer: `p3d predict` and `p3d train` (the same code as trainer/run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from schemas.cli_workflow import SET_OPTION, WORKFLOW_OPTION


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        checkpoint: Path = typer.Option(..., help="exported model folder (<train.out>/stage<N>/model)"),
        shards: Path = typer.Option(..., help="proxy shard folder (<out>/proxies/<name>)"),
        records: Path = typer.Option(..., help="annotation records (JSONL)"),
        out: Path = typer.Option(..., help="predictions JSONL to write"),
        split: str = typer.Option("val", help="records split to answer; 'all' for every record"),
        batch_size: int = typer.Option(8, min=1),
        max_new_tokens: int = typer.Option(32, min=1),
        limit: int | None = typer.Option(None, min=1, help="answer at most this many records"),
    ) -> None:
        """Batched greedy answers; `<OBJxxx>` answers come back with segment ids, labels and boxes."""
        from schemas.cli_workflow import fail
        from schemas.layout import is_proxy_set_dir
        from schemas.proxy import missing_set_error
        from trainer.predict import predict as run_predict

        problem = missing_set_error(shards.parent.parent, shards.name) if is_proxy_set_dir(shards) else None
        if problem is not None:
            fail(f"--shards: {problem}")
        try:
            n = run_predict(checkpoint, shards, records, out, split=None if split == "all" else split,
                            batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        typer.echo(f"{n} predictions -> {out}")

    @app.command()
    def train(
        stage: int = typer.Option(..., min=1, max=4, help="training stage 1-4"),
        workflow: Optional[Path] = WORKFLOW_OPTION,
        sets: Optional[list[str]] = SET_OPTION,
        resume: bool = typer.Option(False, help="continue from the stage's latest complete checkpoint"),
        allow_changed_config: bool = typer.Option(False, help="with --resume: continue even though the stage's "
                                                  "configuration changed since the checkpoint"),
        out: str | None = typer.Option(None, help="override train.out"),
    ) -> None:
        """Train one stage in this process (multi-process: `deepspeed trainer/run.py`)."""
        from schemas.cli_workflow import fail, open_workflow
        from schemas import layout
        from trainer import checkpoint, env
        from trainer.recipes import stage_config
        from trainer.train import StageInputError, check_stage_inputs, resolve_train_config, stage_dir
        from trainer.train import train as run_train

        run = open_workflow(workflow, sets)
        overrides = {"out": out} if out else None
        cfg = resolve_train_config(run.workflow, overrides)
        try:
            check_stage_inputs(run.workflow, cfg, stage)
            if resume:
                checkpoint.check_resume(layout.stage_checkpoints(cfg.out, stage),
                                        checkpoint.run_identity(run.workflow.out, cfg, stage_config(cfg, stage),
                                                                env.world_size()), allow_changed_config)
        except (StageInputError, checkpoint.ResumeConfigError) as e:
            fail(str(e))
        run.save(stage_dir(cfg, stage) / layout.RESOLVED_WORKFLOW, train=cfg)
        folder = run_train(run.workflow, stage, overrides, resume=resume, allow_changed_config=allow_changed_config)
        typer.echo(str(folder))
