"""DeepSpeed entry point: `deepspeed trainer/run.py --stage N [--workflow W] [--set section.key=value]`.

The same command as `p3d train`, with the same flags (trainer/cli.py: `train`); the deepspeed
launcher's `--local_rank=N` is one of them. The workflow is `--workflow`, else $P3D_WORKFLOW, else
the embedded workflows/toy.yaml; the first line printed says which. The resolved workflow is saved as
`<train.out>/stage<N>/resolved_workflow.yaml`. A missing input (stage N-1's model, the proxy set, a
bad workflow) ends with one line saying what to run, and exit status 2. Also runs as
`python trainer/run.py ...` (one process) or under torchrun. The environment DeepSpeed needs on a
CPU-only machine (accelerator, rendezvous variables, extension cache) is set here before anything
imports deepspeed; see trainer/env.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import env  # noqa: E402

env.setup_environment()
PROG = "trainer/run.py"


def command():
    """`p3d train`'s command on its own (no subcommand name)."""
    import typer

    from trainer.cli import train

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train)
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    from typer._click.exceptions import UsageError

    from schemas.cli_errors import input_error, report

    args = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO if env.rank() == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        code = command().main(args=args, prog_name=PROG, standalone_mode=False)
    except UsageError as e:  # as p3d says it: one line
        if env.rank() == 0:
            print(f"error: {' '.join(e.format_message().split())} (see `{PROG} --help`)", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # what p3d's CLI does too (schemas/cli_errors.py): one line, or a bug's traceback
        # Every rank meets the same bad input: rank 0 says it. A bug may be one rank's: each says it.
        quiet = env.rank() != 0 and input_error(e) is not None
        flags = args[:args.index("--")] if "--" in args else args
        verbose = any(a in ("-v", "--verbose") for a in flags)
        sys.exit(report(e, verbose, echo=(lambda _line: None) if quiet else None))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
