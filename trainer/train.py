"""One training stage under DeepSpeed ZeRO: `train(workflow, stage) -> exported model folder`.

Layout under `train.out` (default runs/train):
    stage<N>/checkpoints/<tag>/   DeepSpeed state + p3d_state_rank<r>.json/.safetensors (resume);
                                  p3d_latest.json names the complete one (trainer/checkpoint.py)
    stage<N>/tb/                  TensorBoard events
    stage<N>/model/               the exported Hugging Face folder + p3d modules (p3d_config.json last)
    stage<N>/skipped_records.json per task, records that could not be examples and why (a target
                                  matched no segment: `unmatched_target`)
Stage 1 starts from `train.model` (a hub id, folder or toy:<name>); stage N > 1 from stage<N-1>/model.
`resume=True` continues from the latest complete checkpoint exactly: weights, optimizer, schedule, RNG
and the position in the epoch (the data order is a function of seed, epoch and rank; see rank_stream.py).
It refuses a checkpoint made under another configuration unless `allow_changed_config`, and cuts
train_log.jsonl back to the checkpoint's step, so a step is never logged twice.

`train` is the stage in one screen; the parts it assembles are built above it, one function each:
the process group (`start_distributed`), the model, the per-rank example stream, the DeepSpeed
engine, the resume position (`restore_progress`), the step log (`StepLog`) and the export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas import layout
from schemas.config_train import StageConfig, TrainConfig
from schemas.io import write_json_atomic
from schemas.record import load_records
from schemas.workflow import Workflow, load_workflow
from trainer import env

log = logging.getLogger("p3d.train")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MIN_LR_RATIO = 0.1


def resolve_train_config(workflow: Workflow, overrides: dict | None) -> TrainConfig:
    data = workflow.train.model_dump()
    data.update(overrides or {})
    return TrainConfig.model_validate(data)


class StageInputError(ValueError):
    """A stage's input is not there; the message says which command makes it."""

    def __init__(self, what: str, make_stage: int | None = None):
        self.what, self.make_stage = what, make_stage
        super().__init__(self.text())

    def text(self, workflow_args: str = "") -> str:
        """The message; `workflow_args` (`--workflow W --set ...`) is repeated in the command it names."""
        if self.make_stage is None:
            return self.what
        cmd = f"trainer/run.py --stage {self.make_stage}" + (f" {workflow_args}" if workflow_args else "")
        return (f"{self.what}; `deepspeed {cmd}` makes it (or `python {cmd}`; "
                f"`make train STAGE={self.make_stage}`)")


def check_stage_inputs(workflow: Workflow, cfg: TrainConfig, stage: int) -> None:
    """Fail fast, before DeepSpeed starts, when the proxy set or the previous stage's model is missing."""
    from schemas.proxy import missing_set_error
    from trainer.recipes import stage_config

    problem = missing_set_error(workflow.out, cfg.proxies)
    if problem is not None:
        raise StageInputError(f"train.proxies: {problem}")
    scfg = stage_config(cfg, stage)
    if stage > 1 and not scfg.init_from:
        previous = layout.stage_model(cfg.out, stage - 1)
        if not (previous / "p3d_config.json").exists():
            raise StageInputError(f"stage {stage} starts from stage {stage - 1}'s model, and {previous} has no "
                                  f"finished export: run --stage {stage - 1} first", make_stage=stage - 1)


def stage_stream(cfg: TrainConfig, scfg: StageConfig, shard_dir: Path, records_by_scene: dict,
                 held_out: frozenset[str], rank: int = 0, world: int = 1):
    """The stage's example stream on this rank, as the workflow's train section configures it."""
    from trainer.rank_stream import StageStream

    return StageStream(shard_dir, scfg.stage, records_by_scene, cfg.num_obj_tokens, scfg.batch_size,
                       seed=cfg.seed, shuffle_scenes=cfg.shuffle_scenes, rank=rank, world_size=world,
                       exclude_scenes=held_out, tasks=scfg.tasks, record_tasks=scfg.record_tasks,
                       count_by_listing=cfg.count_by_listing, replay_tasks=scfg.replay_tasks,
                       replay_per_task=scfg.replay_per_task, answer_steps=cfg.answer_steps,
                       layout_rooms=scfg.layout_rooms, layout_tasks=scfg.layout_tasks,
                       layout_per_task=scfg.layout_per_task,
                       position_names=cfg.position_names,
                       shuffle_identifiers=(cfg.shuffle_identifiers if scfg.shuffle_identifiers is None
                                            else scfg.shuffle_identifiers))


def stage_dir(cfg: TrainConfig, stage: int) -> Path:
    return layout.stage_dir(cfg.out, stage)


def records_path(workflow: Workflow, cfg: TrainConfig, scfg: StageConfig) -> Path:
    """The stage's records: its own `records` first, then the workflow's (schemas/layout.py's order),
    with `cfg` (the train section after this run's overrides) as the workflow's train section."""
    return layout.records_path(workflow.model_copy(update={"train": cfg}), scfg.records)


SKIPPED_FILE = layout.SKIPPED_FILE


def skipped_by_task(tallies) -> dict[str, dict[str, int]]:
    """Per-rank tallies of skipped records ((task, reason) -> n, trainer.rank_stream.StageStream.skipped)
    summed into task -> reason -> n, for the log and `stage<N>/skipped_records.json`."""
    out: dict[str, dict[str, int]] = {}
    for tally in tallies:
        for (task, reason), n in tally.items():
            out.setdefault(task, {}).setdefault(reason, 0)
            out[task][reason] += int(n)
    return {task: dict(sorted(reasons.items())) for task, reasons in sorted(out.items())}


def deepspeed_config(name: str, micro_batch: int, grad_accum: int, world_size: int, on_gpu: bool) -> dict:
    ds = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=micro_batch, gradient_accumulation_steps=grad_accum,
              train_batch_size=micro_batch * grad_accum * world_size)
    ds["bf16"] = {"enabled": on_gpu}  # bf16 on GPUs, fp32 on CPU
    zero = ds["zero_optimization"]
    for key in ("offload_optimizer", "offload_param"):
        if key in zero and not on_gpu:
            zero[key]["pin_memory"] = False
    if "offload_optimizer" in zero:
        ds["zero_force_ds_cpu_optimizer"] = False  # we pass a torch optimizer (no fused_adam build)
    return ds


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str = "cosine"):
    """The learning-rate factor per optimizer step: a linear warmup, then a cosine decay to
    MIN_LR_RATIO or (`constant`) the full rate to the end."""
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return fn


def training_records(path: Path, required: bool) -> tuple[dict[str, list], frozenset[str]]:
    """Train-split records by scene, and the held-out scenes (records, but none of them train).

    Stages 1-3 need no records, but they must not see held-out scenes either: their questions
    ("What is <OBJ003>?") are the evaluation's questions about the same objects.
    """
    by_scene: dict[str, list] = defaultdict(list)
    if not path.exists():
        if required:
            raise ValueError(f"{path}: records file not found (stage 4 and the record_tasks of stages 1-3 "
                             "train on records; scannet.yaml's stage 3 reads what `p3d convert mmscan "
                             "--slice object-object` writes)")
        log.warning("%s not found: no scene is held out of stages 1-3", path)
        return by_scene, frozenset()
    other: set[str] = set()
    for rec in load_records(path):
        if rec.split in (None, "train"):
            by_scene[rec.scene_id].append(rec)
        else:
            other.add(rec.scene_id)
    return by_scene, frozenset(other - set(by_scene))


def _load_model(workflow: Workflow, cfg: TrainConfig, scfg: StageConfig, feat_dim: int,
                categories: list[str]):
    from pipeline.models.resolve import resolve_model
    from trainer.model import Proxy3DModel

    stage = scfg.stage
    if stage == 1 and not scfg.init_from:
        base = resolve_model(cfg.model, workflow.out)
        model = Proxy3DModel.build(base, feat_dim=feat_dim, num_obj_tokens=cfg.num_obj_tokens,
                                   categories=categories, height_bins=cfg.height_bins,
                                   height_range=cfg.height_range, fourier_dim=cfg.fourier_dim,
                                   fourier_sigma=cfg.fourier_sigma, fourier_out_scale=cfg.fourier_out_scale,
                                   fourier_frequencies=cfg.fourier_frequencies, glyph_folder=cfg.glyph_folder)
    else:
        previous = Path(scfg.init_from) if scfg.init_from else layout.stage_model(cfg.out, stage - 1)
        if not (previous / "p3d_config.json").exists():
            raise ValueError(f"stage {stage} starts from {previous}, which has no finished export; "
                             f"run --stage {stage - 1} first (or set init_from)")
        model = Proxy3DModel.from_pretrained(previous)
        model.ensure_categories(categories)
    # The stage's layout, not the one the model it starts from was trained with (a demo ablation
    # changes it for stage 4 alone); the export records it for prediction.
    model.cfg.rope_positions = cfg.rope_positions
    # The (x, y) Fourier term joins the scene tokens from train.fourier_from_stage on; untrained before.
    model.cfg.fourier_on = stage >= cfg.fourier_from_stage
    if not model.cfg.fourier_on and "position" in scfg.trainable:
        raise ValueError(f"stage {stage} trains `position`, but its scene tokens leave the Fourier term out "
                         f"(train.fourier_from_stage: {cfg.fourier_from_stage})")
    if model.cfg.feat_dim != feat_dim:
        raise ValueError(f"proxy features have D={feat_dim} but the model's projector expects "
                         f"{model.cfg.feat_dim}")
    return model


# ------------------------------------------------------------------ the stage's parts
@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group, and whether it trains on a GPU."""

    rank: int
    world: int
    on_gpu: bool


def start_distributed(seed: int) -> Ranks:
    """Join the process group (gloo on CPU, nccl on GPUs) and seed every RNG."""
    env.setup_environment()  # before deepspeed is imported
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()
    env.init_distributed(on_gpu)
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), on_gpu)
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return ranks


def build_model(workflow: Workflow, cfg: TrainConfig, scfg: StageConfig, shard_dir: Path):
    """The stage's model, sized to the shards' features and categories, and its trainable parameters."""
    from trainer.shard_reader import categories_in, iter_scenes

    first = next(iter_scenes(shard_dir, shuffle=False))
    model = _load_model(workflow, cfg, scfg, int(first["feat"].shape[1]), categories_in(shard_dir))
    trainable = model.set_trainable(scfg.trainable, cfg.lora_rank)
    model.lm.config.use_cache = False
    if cfg.gradient_checkpointing:
        _enable_checkpointing(model.lm, {"use_reentrant": False})
    return model, trainable


def build_stream(workflow: Workflow, cfg: TrainConfig, scfg: StageConfig, shard_dir: Path, out_dir: Path,
                 ranks: Ranks):
    """This rank's example stream and the batches per epoch every rank runs (the longest rank's).
    Rank 0 writes `skipped_records.json`: records that could not be examples are counted, never
    dropped silently."""
    import torch
    import torch.distributed as dist

    stage = scfg.stage
    needs_records = stage == 4 or bool(scfg.record_tasks or scfg.replay_tasks)
    records_by_scene, held_out = training_records(records_path(workflow, cfg, scfg), required=needs_records)
    if ranks.rank == 0 and held_out:
        log.info("stage %d: %d held-out scenes (only val/test records) are left out of training", stage,
                 len(held_out))
    stream = stage_stream(cfg, scfg, shard_dir, records_by_scene, held_out, ranks.rank, ranks.world)
    local = torch.tensor([stream.local_batches_per_epoch()])
    dist.all_reduce(local, op=dist.ReduceOp.MAX)
    tallies = [None] * ranks.world
    dist.all_gather_object(tallies, dict(stream.skipped))
    if ranks.rank == 0:
        skipped = skipped_by_task(tallies)
        write_json_atomic(out_dir / SKIPPED_FILE, {"stage": stage, "skipped": skipped})
        for task, reasons in skipped.items():
            log.warning("stage %d: %s records skipped: %s", stage, task,
                        ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in reasons.items()))
    if int(local) == 0:
        raise ValueError(f"stage {stage}: no training examples in {shard_dir}")
    return stream, int(local)


def micro_steps(scfg: StageConfig, batches_per_epoch: int) -> int:
    """Micro-batches the stage runs: `max_steps` optimizer steps, else its epochs rounded up to whole
    optimizer steps."""
    if scfg.max_steps:
        return scfg.max_steps * scfg.grad_accum
    return math.ceil(scfg.epochs * batches_per_epoch / scfg.grad_accum) * scfg.grad_accum


def build_engine(model, trainable: list, cfg: TrainConfig, scfg: StageConfig, total_opt: int, ranks: Ranks):
    """The DeepSpeed engine: AdamW on the trainable parameters, warmup then the stage's schedule
    (`lr_lambda`)."""
    import deepspeed
    import torch

    optimizer = torch.optim.AdamW(trainable, lr=scfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_opt, int(scfg.warmup_ratio * total_opt), scfg.lr_schedule))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_config(cfg.deepspeed, scfg.batch_size, scfg.grad_accum, ranks.world, ranks.on_gpu))
    return engine


@dataclass
class Progress:
    """Where the stage is: micro-batches done, the epoch, and the batches done in it."""

    micro: int = 0
    epoch: int = 0
    in_epoch: int = 0

    def resume_state(self, batches_per_epoch: int, stage: int) -> dict:
        """What a checkpoint stores to continue from here: a finished epoch is the next one's start."""
        epoch_done = self.in_epoch == batches_per_epoch
        return {"micro_step": self.micro, "epoch": self.epoch + epoch_done,
                "step_in_epoch": 0 if epoch_done else self.in_epoch, "stage": stage}


def restore_progress(engine, ckpt_dir: Path, marker: dict | None, resume: bool, scfg: StageConfig,
                     rank: int) -> Progress:
    """Step 0 (no earlier checkpoint may be resumed from any more), or the position of the checkpoint
    `marker` names, with its weights, optimizer, schedule and RNGs loaded into `engine`."""
    from trainer import checkpoint

    if marker is None:
        if resume and rank == 0:
            log.info("%s holds no complete checkpoint: stage %d starts from step 0", ckpt_dir, scfg.stage)
        if rank == 0:
            checkpoint.forget(ckpt_dir)
        return Progress()
    state = checkpoint.load(engine, ckpt_dir, marker["tag"])
    progress = Progress(state["micro_step"], state["epoch"], state["step_in_epoch"])
    if rank == 0:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_dir / marker["tag"],
                 progress.micro // scfg.grad_accum, progress.epoch, progress.in_epoch)
    return progress


def epoch_batches(stream, progress: Progress, batches_per_epoch: int):
    """The stream's batches from `progress` on, epoch after epoch; a resumed epoch replays its consumed
    part without computing (the data order is a function of seed, epoch and rank)."""
    while True:
        batches = stream.batches(progress.epoch, batches_per_epoch)
        for _ in range(progress.in_epoch):
            next(batches)
        yield from batches
        progress.epoch, progress.in_epoch = progress.epoch + 1, 0


class StepLog:
    """Rank 0's log of optimizer steps (mean loss, learning rate, tokens/s since the last line) to the
    console, `train_log.jsonl` and TensorBoard. A fresh run starts both anew; a resumed one cuts them
    back to its checkpoint's step, so no step is logged twice. Other ranks log nothing."""

    def __init__(self, out_dir: Path, stage: int, total_opt: int, ranks: Ranks, resumed_step: int | None):
        from trainer import checkpoint

        self.path, self.stage, self.total_opt = out_dir / layout.STAGE_LOG, stage, total_opt
        self.world, self.writer = ranks.world, None
        if ranks.rank == 0:
            if resumed_step is None:
                self.path.unlink(missing_ok=True)
            else:
                checkpoint.truncate_log(self.path, resumed_step)
            out_dir.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after the checkpoint it resumes from
            self.writer = SummaryWriter(str(out_dir / layout.STAGE_TENSORBOARD),
                                        purge_step=None if resumed_step is None else resumed_step + 1)
        self.restart()

    def restart(self) -> None:
        self.losses, self.tokens, self.start = [], 0, time.perf_counter()

    def add(self, loss, batch: dict) -> None:
        if self.writer is not None:
            self.losses.append(float(loss.detach()))
            self.tokens += int(batch["attention_mask"].sum())

    def write(self, step: int, epoch: int, lr: float) -> None:
        if self.writer is None:
            return
        mean_loss = sum(self.losses) / len(self.losses)
        tokens_per_s = self.tokens * self.world / max(time.perf_counter() - self.start, 1e-9)
        log.info("stage %d step %d/%d epoch %d loss %.4f lr %.2e tokens/s %.0f", self.stage, step,
                 self.total_opt, epoch, mean_loss, lr, tokens_per_s)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr,
                                "tokens_per_s": tokens_per_s}) + "\n")
        for name, value in (("loss", mean_loss), ("lr", lr), ("tokens_per_s", tokens_per_s)):
            self.writer.add_scalar(f"train/{name}", value, step)
        self.restart()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def export_stage(engine, model, workflow: Workflow, cfg: TrainConfig, scfg: StageConfig, total_opt: int,
                 ranks: Ranks, export_dir: Path) -> Path:
    """Gather the full weights (ZeRO-3 partitions them) and write the stage's model folder on rank 0."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = model.state_dict() if ranks.rank == 0 else None
    if ranks.rank == 0:
        model.cfg.stages_done = sorted(set(model.cfg.stages_done) | {scfg.stage})
        model.export(export_dir, state_dict=state, extra={
            "stage": scfg.stage, "stage_config": scfg.model_dump(), "train_config": cfg.model_dump(),
            "workflow": workflow.name, "optimizer_steps": total_opt, "world_size": ranks.world})
        log.info("stage %d: exported %s", scfg.stage, export_dir)
    dist.barrier()
    env.cleanup_shm()
    return export_dir


# ------------------------------------------------------------------ the stage
def train(workflow: Workflow | str | Path, stage: int, overrides: dict | None = None, *,
          resume: bool = False, allow_changed_config: bool = False,
          stop_after: int | None = None) -> Path | None:
    """Run one stage; returns the exported model folder (stage<N>/model).

    `stop_after` ends the process's work after that many optimizer steps without exporting (returns
    None), as a preemption would: tests use it to check that `resume` continues exactly.

    A little over 60 lines on purpose: the set-up (each piece its own function above) and the step
    loop read in one screen, as torchtitan's `train()` does; splitting the loop would hide it.
    """
    from trainer import checkpoint
    from trainer.recipes import stage_config

    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    cfg = resolve_train_config(wf, overrides)
    scfg = stage_config(cfg, stage)
    check_stage_inputs(wf, cfg, stage)
    identity = checkpoint.run_identity(wf.out, cfg, scfg, env.world_size())
    out_dir, ckpt_dir = stage_dir(cfg, stage), layout.stage_checkpoints(cfg.out, stage)
    marker = (checkpoint.check_resume(ckpt_dir, wf.out, cfg, scfg, env.world_size(), allow_changed_config)
              if resume else None)

    ranks = start_distributed(cfg.seed)
    import torch.distributed as dist

    from trainer.shard_reader import Collator
    shard_dir = layout.proxies_dir(wf.out, cfg.proxies)
    model, trainable = build_model(wf, cfg, scfg, shard_dir)
    num_trainable = sum(p.numel() for p in trainable)  # before ZeRO-3 partitions them
    stream, batches_per_epoch = build_stream(wf, cfg, scfg, shard_dir, out_dir, ranks)
    total_micro = micro_steps(scfg, batches_per_epoch)
    total_opt = total_micro // scfg.grad_accum
    engine = build_engine(model, trainable, cfg, scfg, total_opt, ranks)
    collate = Collator(model.tokenizer, model.cfg, model.category_ids, max_length=cfg.max_length)
    progress = restore_progress(engine, ckpt_dir, marker, resume, scfg, ranks.rank)
    steps_log = StepLog(out_dir, stage, total_opt, ranks,
                        None if marker is None else progress.micro // scfg.grad_accum)
    if ranks.rank == 0:
        log.info("stage %d: %s, %d rank(s), %d batches/epoch, %d optimizer steps, trainable %s "
                 "(%.2fM params)", stage, cfg.deepspeed, ranks.world, batches_per_epoch, total_opt,
                 scfg.trainable, num_trainable / 1e6)

    batches = epoch_batches(stream, progress, batches_per_epoch)
    while progress.micro < total_micro:
        batch = {k: (v.to(engine.device) if v is not None else None)
                 for k, v in collate(next(batches)).items()}
        loss = engine(batch).loss
        engine.backward(loss)
        engine.step()
        progress.micro, progress.in_epoch = progress.micro + 1, progress.in_epoch + 1
        steps_log.add(loss, batch)
        if progress.micro % scfg.grad_accum:
            continue  # within a gradient accumulation: no optimizer step yet
        opt_step = progress.micro // scfg.grad_accum
        if opt_step % cfg.log_every == 0:
            steps_log.write(opt_step, progress.epoch, engine.get_lr()[0])
        if opt_step % cfg.save_every == 0 or progress.micro == total_micro:
            checkpoint.save(engine, ckpt_dir, opt_step, progress.resume_state(batches_per_epoch, stage),
                            identity)
        if stop_after is not None and opt_step >= stop_after:
            break
    steps_log.close()
    if progress.micro < total_micro:  # stopped early on request: the checkpoint is the result
        dist.barrier()
        return None
    return export_stage(engine, model, wf, cfg, scfg, total_opt, ranks, layout.stage_model(cfg.out, stage))


def _enable_checkpointing(lm, kwargs: dict) -> None:
    # transformers 5 renamed it; keep working on both spellings.
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
