"""CLI verbs of the trainer: `p3d predict` and `p3d train`. `train` is also the whole of
trainer/run.py (what `deepspeed trainer/run.py` starts on each rank): one function, one set of flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn, Optional

import typer

from schemas.cli_workflow import SET_OPTION, WORKFLOW_OPTION
from schemas.config_train import TrainConfig
from schemas.workflow import EvalConfig


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
        mbr_tasks: str = typer.Option("", help="comma-separated tasks with number answers to decode by "
                                      "minimum Bayes risk under MRA (workflow: eval.mbr_tasks); others greedy"),
        mbr_samples: int = typer.Option(EvalConfig.model_fields["mbr_samples"].default, min=2,
                                        help="sampled answers per question of --mbr-tasks"),
        seed: int = typer.Option(0, help="seed of the --mbr-tasks samples (with each record's id)"),
    ) -> None:
        """Batched greedy answers (minimum Bayes risk for --mbr-tasks); `<OBJxxx>` answers come back
        with segment ids, labels and boxes."""
        from schemas.cli_workflow import fail
        from schemas.layout import is_proxy_set_dir
        from schemas.proxy import missing_set_error
        from trainer.predict import predict as run_predict

        problem = missing_set_error(shards.parent.parent, shards.name) if is_proxy_set_dir(shards) else None
        if problem is not None:
            fail(f"--shards: {problem}")
        try:
            n = run_predict(checkpoint, shards, records, out, split=None if split == "all" else split,
                            batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit,
                            mbr_tasks=[t for t in mbr_tasks.split(",") if t], mbr_samples=mbr_samples, seed=seed)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        typer.echo(f"{n} predictions -> {out}")

    app.command(name="train")(train)


DeepSpeedName = TrainConfig.model_fields["deepspeed"].annotation  # a config in trainer/configs/


def train(
    stage: int = typer.Option(..., min=1, max=4, help="training stage 1-4"),
    workflow: Optional[Path] = WORKFLOW_OPTION,
    sets: Optional[list[str]] = SET_OPTION,
    resume: bool = typer.Option(False, help="continue from the stage's latest complete checkpoint"),
    allow_changed_config: bool = typer.Option(False, help="with --resume: continue even though the stage's "
                                              "configuration changed since the checkpoint"),
    out: Optional[str] = typer.Option(None, help="override train.out (the checkpoint root)"),
    max_steps: Optional[int] = typer.Option(None, min=1, help="override the stage's max_steps"),
    deepspeed_config: Optional[DeepSpeedName] = typer.Option(None, help="override train.deepspeed"),
    local_rank: Optional[int] = typer.Option(None, "--local_rank", "--local-rank", hidden=True,
                                             help="set by the deepspeed launcher"),
    # read where errors are reported (p3d's command group, trainer/run.py's main), wherever it stands
    verbose: bool = typer.Option(False, "-v", "--verbose", help="show the traceback of an error"),
) -> None:
    """Train one stage, in this process or as one rank of `deepspeed trainer/run.py` (the same flags).

    Rank 0 alone prints, saves <train.out>/stage<N>/resolved_workflow.yaml and names a bad input.
    """
    from schemas import layout
    from schemas.errors import SchemaError
    from schemas.workflow import resolve_workflow
    from trainer import checkpoint, env
    from trainer.recipes import stage_config
    from trainer.train import StageInputError, check_stage_inputs, resolve_train_config, stage_dir
    from trainer.train import train as run_train

    _join_launcher(local_rank)
    say = typer.echo if env.rank() == 0 else (lambda *_: None)
    try:
        run = resolve_workflow(workflow, sets or [], echo=say)
    except SchemaError as e:
        _fail(str(e))
    overrides = _flag_overrides(run.workflow, stage, out, max_steps, deepspeed_config)
    try:
        cfg = resolve_train_config(run.workflow, overrides)
        check_stage_inputs(run.workflow, cfg, stage)
        if resume:  # before the resolved workflow is overwritten with a refused one
            checkpoint.check_resume(layout.stage_checkpoints(cfg.out, stage), run.workflow.out, cfg,
                                    stage_config(cfg, stage), env.world_size(), allow_changed_config)
        if env.rank() == 0:
            run.save(stage_dir(cfg, stage) / layout.RESOLVED_WORKFLOW, train=cfg)
        folder = run_train(run.workflow, stage, overrides, resume=resume,
                           allow_changed_config=allow_changed_config)
    except StageInputError as e:
        _fail(e.text(_same_workflow_args(workflow, sets or [], out)))
    except checkpoint.ResumeConfigError as e:
        _fail(str(e))
    say(str(folder))


def _join_launcher(local_rank: int | None) -> None:
    """A rank started by the deepspeed launcher (`--local_rank=N`) or torchrun: its GPU, and its death
    with the launcher."""
    if local_rank is not None:
        os.environ["LOCAL_RANK"] = str(local_rank)
    if local_rank is not None or "TORCHELASTIC_RUN_ID" in os.environ:
        from pipeline.processes import die_with_parent

        die_with_parent()  # a SIGKILLed torchrun leaves its ranks (own sessions) training on


def _flag_overrides(workflow, stage: int, out: str | None, max_steps: int | None,
                    deepspeed_config: str | None) -> dict:
    """The train-section fields the flags change (`--max-steps` changes the one stage's entry)."""
    from trainer.recipes import stage_config
    from trainer.train import resolve_train_config

    overrides: dict = {}
    if out:
        overrides["out"] = out
    if deepspeed_config:
        overrides["deepspeed"] = deepspeed_config
    if max_steps:
        cfg = resolve_train_config(workflow, overrides)
        scfg = stage_config(cfg, stage).model_copy(update={"max_steps": max_steps})
        overrides["stages"] = [s.model_dump() for s in cfg.stages if s.stage != stage] + [scfg.model_dump()]
    return overrides


def _same_workflow_args(workflow: Path | None, sets: list[str], out: str | None) -> str:
    """The flags that pick this run's workflow, to repeat in the command a message suggests."""
    import shlex

    parts = (["--workflow", str(workflow)] if workflow else []) + [a for s in sets for a in ("--set", s)]
    if out:
        parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit 2; every rank meets the same bad input, and rank 0 says it."""
    from trainer import env

    if env.rank() == 0:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
