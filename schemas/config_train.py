"""Trainer configuration (the `train:` section of a workflow)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

Trainable = Literal["projector", "position", "identifiers", "language_model", "lora"]
# How the proxies' rotary position ids are laid out (trainer/positions.py says each).
RopePositions = Literal["height", "bfs"]
ROPE_POSITIONS: tuple[str, ...] = get_args(RopePositions)
# The (x, y) Fourier term's initial frequencies (`train.fourier_frequencies`; trainer/positions.py).
FourierFrequencies = Literal["gaussian", "axis_ladder"]
FOURIER_FREQUENCIES: tuple[str, ...] = get_args(FourierFrequencies)
# How stage 2's position questions name the object (`train.position_names`; trainer/examples.py).
PositionName = Literal["identifier", "category"]


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: int = Field(ge=1, le=4)
    trainable: list[Trainable] = Field(min_length=1, description="the parts this stage trains; the rest stay "
                                       "frozen. `identifiers` (the <OBJxxx> table, drawn glyphs through the "
                                       "vision encoder) is frozen unless listed, as the paper's objects are "
                                       "referenced without learnable embeddings")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after the warmup: cosine decay to a tenth of `lr`, or `lr` to the end. On "
        "generated toy rooms a constant rate reads positions sooner (measured: "
        "docs/RESULTS.md#spatial-trainer-path)")
    batch_size: int = Field(1, ge=1, description="per device")
    grad_accum: int = Field(1, ge=1)
    records: str | None = Field(None, description="this stage's records file (stage 4's examples, or the "
                                "record_tasks of stages 1-3, e.g. MMScan's object-object QA for stage 3); "
                                "default: the workflow's")
    init_from: str | None = Field(None, description="exported p3d folder to start from instead of the "
                                                    "previous stage's (stage 1: instead of `model`)")
    tasks: list[str] | None = Field(None, description="train only the examples of these tasks (stage 1-3: "
                                    "the generated tasks, e.g. object_name; stage 3 may also name stage 2's, "
                                    "object_position and object_size, to replay them; stage 4: record tasks, "
                                    "and stage 2's, asked of the proxies); default: all")
    shuffle_identifiers: bool | None = Field(None, description="this stage's override of "
                                             "train.shuffle_identifiers")
    record_tasks: list[str] = Field(default_factory=list, description="stages 1-3: also train the records "
                                    "of these tasks (e.g. counting), on the stage's simplified scene")

    replay_tasks: list[str] = Field(default_factory=list, description="also train `replay_per_task` "
                                    "records of each of these tasks per scene and epoch, drawn anew each "
                                    "epoch: keeps what an earlier stage taught (stage 4: the spatial tasks "
                                    "of stages 2-3) at a small cost")
    replay_per_task: int = Field(1, ge=1, description="records of each replay task per scene and epoch "
                                 "(fewer when the scene has fewer)")
    layout_rooms: int = Field(0, ge=0, description="toy categories: also train on this many generated toy "
                              "rooms (boxes, categories and the toy annotation's records, no frames; "
                              "pipeline/toy/layout_rooms.py), never a held-out scene; stage 4 puts them as "
                              "simplified scenes, in batches of their own")
    layout_tasks: list[str] | None = Field(None, description="keep only these tasks' examples of the "
                                           "generated rooms (of the stage's tasks, record_tasks and "
                                           "replays), e.g. stage 4's spatial replays; default: all")
    layout_per_task: dict[str, PositiveInt] = Field(
        default_factory=dict, description="task -> at most this many of its examples per generated room and "
                                          "epoch, drawn anew each epoch; the tasks it does not name keep all "
                                          "of theirs. The steps a room spends on what it asks of every object "
                                          "(positions, the lookup) go to what it asks a few times "
                                          "(left/right, distance); default: all")

    @model_validator(mode="after")
    def _record_tasks_before_stage_4(self):
        if self.record_tasks and self.stage == 4:
            raise ValueError("record_tasks is for stages 1-3; stage 4 trains on records already "
                             "(choose them with `tasks`)")
        return self

    @model_validator(mode="after")
    def _capped_tasks_are_asked(self):
        # A cap on a task the generated rooms are not asked would cap nothing (a misspelt name, say).
        if self.layout_per_task and self.layout_tasks is not None:
            stray = sorted(set(self.layout_per_task) - set(self.layout_tasks))
            if stray:
                raise ValueError(f"layout_per_task caps {stray}, which layout_tasks does not ask of the "
                                 f"generated rooms ({self.layout_tasks})")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="hub id, folder, toy:<name> or random:<name>")
    proxies: str = Field("default", description="proxy shard set name under <out>/proxies/")
    records: str | None = Field(None, description="annotation records (JSONL); default: eval.records, else "
                                "<out>/annotations.jsonl (schemas/layout.py: records_path)")
    out: str = Field("runs/train", description="checkpoint root; stage N writes <out>/stage<N>")
    num_obj_tokens: int = Field(200, ge=1)
    deepspeed: Literal["zero2", "zero3", "zero3_offload"] = "zero2"
    gradient_checkpointing: bool = True
    height_bins: int = Field(64, ge=2, description="quantization of the vertical coordinate for RoPE")
    height_range: tuple[float, float] = (-0.5, 3.5)
    rope_positions: RopePositions = Field("height", description="proxies' rotary position ids: 'height' "
                                          "(one time step, height bins; the paper's reading) or 'bfs' (the "
                                          "temporal row is the proxy's BFS index); see trainer/positions.py")
    fourier_dim: int = Field(64, ge=2)
    fourier_sigma: float = Field(1.0, gt=0, description="spread of the (x, y) Fourier frequencies (cycles per "
                                 "metre) when stage 1 builds the model; lower is smoother. On generated toy "
                                 "rooms 0.3 reads positions sooner than 1.0 (measured: "
                                 "docs/RESULTS.md#spatial-trainer-path)")
    fourier_frequencies: FourierFrequencies = Field("gaussian", description="the (x, y) Fourier frequencies "
                                                    "when stage 1 builds the model: 'gaussian' (2D, spread "
                                                    "fourier_sigma) or 'axis_ladder' (half along each axis, "
                                                    "log-spaced 0.05-1 cycle per metre, fourier_sigma unused); "
                                                    "the toy's small model reads both axes from the ladder in "
                                                    "more seeds (measured: docs/RESULTS.md#fourier-ladder)")
    fourier_out_scale: float = Field(0.02, gt=0, description="size of the (x, y) Fourier term when stage 1 "
                                     "builds the model (its last layer's weight spread times sqrt(MLP width)). "
                                     "Small keeps a pretrained language model's first view of the proxies "
                                     "nearly unchanged; the toy's random-init model reads positions in a "
                                     "fraction of the steps at 1.0 (measured: docs/RESULTS.md#fourier-out-scale)")
    fourier_from_stage: int = Field(1, ge=1, le=4, description="first stage whose scene tokens carry the (x, y) "
                                    "Fourier term; before it the term is left out, untrained (stage 1 trains "
                                    "naming; the paper aligns coordinates in stage 2). The toy's 2: a large "
                                    "random term there slows stage 1's lookup (measured: "
                                    "docs/RESULTS.md#fourier-out-scale)")
    max_length: int = Field(2048, ge=16)
    lora_rank: int = Field(16, ge=1)
    save_every: int = Field(500, ge=1, description="DeepSpeed checkpoint every N optimizer steps")
    log_every: int = Field(10, ge=1, description="console/TensorBoard log every N optimizer steps")
    glyph_folder: str | None = Field(None, description="category symbol images <category>.png; default drawn")
    shuffle_scenes: int = Field(16, ge=1, description="scenes whose examples are shuffled together")
    shuffle_identifiers: bool = Field(False, description="training only: a fresh random <OBJxxx> assignment "
                                                        "per scene and epoch, so identifiers stay names the model "
                                                        "looks up rather than memorizes per scene")
    count_by_listing: bool = Field(False, description="counting records with known target objects are "
                                   "answered '<OBJ002> <OBJ005>: 2' (the objects, then the count); "
                                   "`p3d predict` reads both forms")
    answer_steps: list[Literal["distance", "relative_direction"]] = Field(
        default_factory=list, description="records of these tasks are answered after first-order steps on the "
        "named objects' centres ('sofa 1.0 2.0 0.4, table 2.2 1.6 0.4, 4.6 3.8: 1.3', 'west north, north west: "
        "left'; trainer/examples.py: answer_in_steps; a distance needs the words its question names the objects "
        "by, the record's target_names, unless it names them by identifier); `p3d predict` keeps the answer "
        "after the steps")
    position_names: list[PositionName] = Field(
        default_factory=lambda: ["identifier"], min_length=1,
        description="how stage 2's (and a replaying stage 3's) position questions name the object: 'Where is "
        "<OBJ004>?' and/or 'Where is the sofa?' for a category unique in the scene, as the spatial records "
        "ask (trainer/examples.py: stage2_examples)")
    seed: int = 0
    stages: list[StageConfig] = Field(default_factory=list,
                                      description="per-stage recipes; a missing stage takes the paper's default "
                                      "(trainer/recipes.py), whatever the model")

    def stage(self, n: int) -> StageConfig | None:
        found = [s for s in self.stages if s.stage == n]
        if len(found) > 1:
            raise ValueError(f"train.stages: stage {n} is listed {len(found)} times")
        return found[0] if found else None
