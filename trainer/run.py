"""DeepSpeed entry point: `deepspeed trainer/run.py --stage N [--workflow W] [--set section.key=value]`.

The workflow is `--workflow`, else $P3D_WORKFLOW, else the embedded workflows/toy.yaml; the first
line printed says which. The resolved workflow is saved as `<train.out>/stage<N>/resolved_workflow.yaml`.
A missing input (stage N-1's model, the proxy set, a bad workflow) ends with one line saying what to
run, and exit status 2. Also runs as `python trainer/run.py ...` (one process) or under torchrun. The environment DeepSpeed
needs on a CPU-only machine (accelerator, rendezvous variables, extension cache) is set here before
anything imports deepspeed; see trainer/env.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import env  # noqa: E402

env.setup_environment()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=int, required=True, choices=(1, 2, 3, 4))
    p.add_argument("--workflow", help="workflow YAML (default: $P3D_WORKFLOW, else workflows/toy.yaml)")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE",
                   help="change one workflow field, e.g. train.proxies=k700 (repeatable; the value is YAML)")
    p.add_argument("--resume", action="store_true", help="continue from the stage's latest complete checkpoint")
    p.add_argument("--allow-changed-config", action="store_true",
                   help="with --resume: continue even though the stage's configuration changed since the checkpoint")
    p.add_argument("--out", help="override train.out (checkpoint root)")
    p.add_argument("--max-steps", type=int, help="override the stage's max_steps")
    p.add_argument("--deepspeed-config", choices=("zero2", "zero3", "zero3_offload"), help="override train.deepspeed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.local_rank is not None:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    if args.local_rank is not None or "TORCHELASTIC_RUN_ID" in os.environ:  # started by a launcher
        from pipeline.processes import die_with_parent

        die_with_parent()  # a SIGKILLed torchrun leaves its ranks (own sessions) training on
    logging.basicConfig(level=logging.INFO if env.rank() == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        _run(args)
    except Exception as e:  # what p3d's CLI does too (schemas/cli_errors.py): one line, or a bug's traceback
        from schemas.cli_errors import input_error, report

        # Every rank meets the same bad input: rank 0 says it. A bug may be one rank's: each says it.
        quiet = env.rank() != 0 and input_error(e) is not None
        sys.exit(report(e, args.verbose, echo=(lambda _line: None) if quiet else None))


def _run(args: argparse.Namespace) -> None:
    from schemas import layout
    from schemas.errors import SchemaError
    from schemas.workflow import resolve_workflow
    from trainer import checkpoint
    from trainer.recipes import stage_config
    from trainer.train import StageInputError, check_stage_inputs, resolve_train_config, stage_dir, train

    say = print if env.rank() == 0 else (lambda *_: None)
    try:
        run = resolve_workflow(args.workflow, args.sets, echo=say)
    except SchemaError as e:
        _fail(str(e))
    wf = run.workflow
    overrides: dict = {}
    if args.out:
        overrides["out"] = args.out
    if args.deepspeed_config:
        overrides["deepspeed"] = args.deepspeed_config
    try:
        if args.max_steps:
            cfg = resolve_train_config(wf, overrides)
            scfg = stage_config(cfg, args.stage).model_copy(update={"max_steps": args.max_steps})
            overrides["stages"] = [s.model_dump() for s in cfg.stages if s.stage != args.stage] + [scfg.model_dump()]
        cfg = resolve_train_config(wf, overrides)
        check_stage_inputs(wf, cfg, args.stage)
        if args.resume:  # before the resolved workflow is overwritten with a refused one
            checkpoint.check_resume(layout.stage_checkpoints(cfg.out, args.stage),
                                    checkpoint.run_identity(wf.out, cfg, stage_config(cfg, args.stage),
                                                            env.world_size()), args.allow_changed_config)
        if env.rank() == 0:
            run.save(stage_dir(cfg, args.stage) / layout.RESOLVED_WORKFLOW, train=cfg)
        folder = train(wf, args.stage, overrides, resume=args.resume, allow_changed_config=args.allow_changed_config)
    except StageInputError as e:
        _fail(e.text(_same_workflow_args(args)))
    except checkpoint.ResumeConfigError as e:
        _fail(str(e))
    if env.rank() == 0:
        print(folder)


def _same_workflow_args(args: argparse.Namespace) -> str:
    """The flags that pick this run's workflow, to repeat in the command a message suggests."""
    import shlex

    parts = (["--workflow", args.workflow] if args.workflow else []) + [a for s in args.sets for a in ("--set", s)]
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def _fail(message: str) -> None:
    if env.rank() == 0:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
