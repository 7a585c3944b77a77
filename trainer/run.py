"""DeepSpeed entry point: `deepspeed trainer/run.py --stage N --workflow workflows/<name>.yaml`.

Also runs as `python trainer/run.py ...` (one process) or under torchrun. The environment DeepSpeed
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
    p.add_argument("--workflow", required=True, help="workflow YAML (its `train:` section)")
    p.add_argument("--resume", action="store_true", help="continue from the stage's latest checkpoint")
    p.add_argument("--out", help="override train.out (checkpoint root)")
    p.add_argument("--max-steps", type=int, help="override the stage's max_steps")
    p.add_argument("--deepspeed-config", choices=("zero2", "zero3", "zero3_offload"), help="override train.deepspeed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.local_rank is not None:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    logging.basicConfig(level=logging.INFO if env.rank() == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from schemas.workflow import load_workflow
    from trainer.recipes import stage_config
    from trainer.train import resolve_train_config, train

    wf = load_workflow(args.workflow)
    overrides: dict = {}
    if args.out:
        overrides["out"] = args.out
    if args.deepspeed_config:
        overrides["deepspeed"] = args.deepspeed_config
    if args.max_steps:
        cfg = resolve_train_config(wf, overrides)
        scfg = stage_config(cfg, args.stage).model_copy(update={"max_steps": args.max_steps})
        overrides["stages"] = [s.model_dump() for s in cfg.stages if s.stage != args.stage] + [scfg.model_dump()]
    folder = train(wf, args.stage, overrides, resume=args.resume)
    if env.rank() == 0:
        print(folder)


if __name__ == "__main__":
    main()
