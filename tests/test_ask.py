"""`p3d ask` as a user runs it: a toy scene filmed into an mp4, a small checkpoint trained here
through `p3d train` (its resolved workflow saved beside it, with the real networks' backends: the
tiny `toy:` Qwen2.5-VL encoder, a random VGGT and the tiny SAM 2), then `p3d ask` on the mp4.

Random weights give meaningless answers: the tests check the plumbing and the contracts (format,
objects, boxes, the frame and scale named, the cache, the KV-cached answers equal to re-encoding),
and the clear errors. The training step uses synthetic proxy shards of the encoder's width (D=128,
tests/synthetic_shards.py) so that the checkpoint costs seconds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from p3d.ask.prepare import MIN_PARALLAX, check_parallax

FRAMES = 6


def randomize_language_model(model, seed: int = 0) -> None:
    """Every matrix of the language model drawn with std 1/sqrt(fan-in): answers then depend on the question."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.lm.named_parameters():
            if param.dim() == 2 and "visual" not in name:
                param.normal_(0, param.shape[1] ** -0.5)


def _invoke(*argv: str):
    from p3d.cli import app

    return CliRunner().invoke(app, list(argv))


def _ok(*argv: str):
    res = _invoke(*argv)
    assert res.exit_code == 0, f"{argv}:\n{res.output}\n{res.exception!r}"
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pipeline.models.vggt.config import VGGTConfig
    from pipeline.models.vggt.loader import random_vggt, save_vggt
    from pipeline.toy.film import film_toy_scene
    from pipeline.toy.models import build_toy_qwen
    from schemas.workflow import ToyWorldConfig
    from tests.synthetic_shards import write_synthetic

    root = tmp_path_factory.mktemp("ask")
    qwen = build_toy_qwen(root / "qwen", ["Find the chair.", "What is a chair?", "How many lamps are in the room?"])
    _, records = write_synthetic(root / "data", num_scenes=4, dim=128, scenes_per_shard=2)
    vggt = save_vggt(random_vggt(VGGTConfig.tiny(embed_dim=32, depth=2, num_heads=2), seed=3), root / "vggt", toy=True)
    toy = ToyWorldConfig(num_scenes=2, frames=12, seed=4, image_size=(112, 140))
    video = film_toy_scene(toy, 0, root / "videos" / "room.mp4")
    wf = {
        "name": "asktest", "out": str(root / "data"),
        "source": {"kind": "video", "path": str(root / "videos")},
        "features": {"num_frames": FRAMES, "image_size": [112, 140], "encoder": {"model": "toy:qwen2_5_vl"},
                     "geometry": {"kind": "vggt", "model": str(vggt)},
                     "segmenter": {"kind": "sam2", "model": "toy:sam2", "points_per_side": 4, "pred_iou_thresh": 0.0,
                                   "stability_thresh": 0.0, "min_mask_area": 0.0}},
        "cluster": {"proxies": 32},
        "train": {"model": str(qwen), "proxies": "synthetic", "records": str(records), "out": str(root / "train"),
                  "num_obj_tokens": 32, "height_bins": 16, "fourier_dim": 16, "save_every": 1000,
                  "stages": [
                      {"stage": 1, "trainable": ["identifiers", "language_model"], "max_steps": 1, "batch_size": 2},
                      {"stage": 4, "trainable": ["projector", "position", "identifiers", "language_model"],
                       "max_steps": 1, "batch_size": 2, "init_from": str(root / "train" / "stage1" / "model")}]},
    }
    wf_path = root / "asktest.yaml"
    wf_path.write_text(yaml.safe_dump(wf))
    for stage in ("1", "4"):
        _ok("train", "--stage", stage, "--workflow", str(wf_path))
    checkpoint = root / "train" / "stage4" / "model"
    assert (checkpoint.parent / "resolved_workflow.yaml").is_file()
    return root, checkpoint, video, wf, root / "cache"


@pytest.fixture(scope="module")
def toy_checkpoint(trained):
    """The trained model beside a workflow with the toy world's simulated networks (`sim_vggt`,
    `sim_sam2`), as the toy demo's checkpoints are: it reads the scene's ground truth, not its pixels."""
    root, checkpoint, *_ = trained
    stage_dir = root / "toytrain" / "stage4"
    stage_dir.mkdir(parents=True)
    (stage_dir / "model").symlink_to(checkpoint, target_is_directory=True)
    own = yaml.safe_load((checkpoint.parent / "resolved_workflow.yaml").read_text())
    own["features"]["geometry"], own["features"]["segmenter"] = {"kind": "sim_vggt"}, {"kind": "sim_sam2"}
    (stage_dir / "resolved_workflow.yaml").write_text(yaml.safe_dump(own))
    return stage_dir / "model"


@pytest.mark.slow
def test_ask_a_video_prints_the_answer_with_objects_and_boxes_then_reuses_the_cache(trained, tmp_path):
    root, checkpoint, video, _, cache = trained  # the first test: the cache is empty
    first = _ok("ask", str(video), "Find the chair.", "--checkpoint", str(checkpoint), "--cache", str(cache), "--json")
    doc = json.loads(first.stdout)
    assert doc["scene_id"] == "room" and doc["kind"] == "video" and doc["cached"] is False
    # A video has no poses: the frame is gravity-aligned and the scale comes from the stated prior.
    assert doc["frame"]["method"] == "gravity" and doc["frame"]["scale_method"] == "prior"
    assert "gravity-aligned" in doc["frame"]["description"] and "scale prior" in doc["frame"]["description"]
    (answer,) = doc["answers"]
    assert answer["question"] == "Find the chair." and isinstance(answer["text"], str)
    for obj in answer["objects"]:
        assert obj["identifier"].startswith("<OBJ") and obj["category_from"] == "model"
        assert len(obj["box"]["center"]) == 3 and all(s >= 0 for s in obj["box"]["size"])
    assert answer["boxes"] == [o["box"] for o in answer["objects"]]

    # The store group and the shard are those of the first call: nothing is recomputed.
    group = next((Path(doc["cache"]) / "features").glob("room"))
    shard = next((Path(doc["cache"]) / "proxies" / "ask").glob("shard-*.tar"))
    stamps = (os.stat(group / "zarr.json").st_mtime_ns, os.stat(shard).st_mtime_ns)
    second = _ok("ask", str(video), "How many lamps are in the room?", "--checkpoint", str(checkpoint),
                 "--cache", str(cache))
    assert "cached" in second.stdout and "Q: How many lamps are in the room?" in second.stdout
    assert "A: " in second.stdout and "boxes in gravity-aligned" in second.stdout
    assert (os.stat(group / "zarr.json").st_mtime_ns, os.stat(shard).st_mtime_ns) == stamps


@pytest.mark.slow
def test_objects_named_by_an_answer_come_with_segment_box_and_category(trained):
    """An answer naming two identifiers: each comes back with its segment and box from segments.json,
    and its category from the model's own answer to the naming question (a video has no ground truth),
    or from the matched ground-truth instance where the segment has one."""
    import copy

    from p3d.ask.answer import (
        NAMING_QUESTION,
        PrefixCache,
        generate_reencoded,
        load_model,
        named_objects,
    )
    from p3d.ask.inputs import open_input
    from p3d.ask.prepare import checkpoint_workflow, prepare_scene
    from trainer.shard_reader import scene_inputs
    from trainer.objects import segment_identifiers
    from trainer.predict import clean_text

    _, checkpoint, video, _, cache = trained
    scene = prepare_scene(checkpoint_workflow(checkpoint, None, []), open_input(video, FRAMES), cache,
                          echo=lambda _: None)
    model, collate, mode = load_model(checkpoint)
    segments = scene.sample["segments"]
    ident = segment_identifiers(segments, model.cfg.num_obj_tokens)
    assert len(ident) >= 2, "the video's scene has instance segments with identifiers"
    first, second = sorted(ident, key=ident.get)[:2]
    inputs = scene_inputs(scene.sample, mode, model.cfg.num_obj_tokens)
    prefix = PrefixCache(model, collate, "room", inputs)
    asked = []

    def ask_name(identifier):
        asked.append(identifier)
        return clean_text(model.tokenizer.decode(prefix.generate(NAMING_QUESTION.format(identifier), 6)))

    text = f"<OBJ{ident[second]:03d}> <OBJ{ident[first]:03d}>"
    objects = named_objects(text, segments, model.cfg.num_obj_tokens, ask_name)
    assert [o["segment_id"] for o in objects] == [second, first]  # in the order the answer names them
    for obj, seg_id in zip(objects, (second, first)):
        seg = next(s for s in segments if s["id"] == seg_id)
        assert obj["box"] == seg["box"] and obj["identifier"] == f"<OBJ{ident[seg_id]:03d}>"
        reference = generate_reencoded(model, collate, "room", inputs, f"What is {obj['identifier']}?", 6)
        assert obj["category"] == clean_text(model.tokenizer.decode(reference)) and obj["category_from"] == "model"
    # A segment matched to a ground-truth instance takes that instance's category; the model is not asked.
    matched = copy.deepcopy(segments)
    next(s for s in matched if s["id"] == first).update(category="chair", instance_id=7)
    asked.clear()
    (obj,) = named_objects(f"<OBJ{ident[first]:03d}>", matched, model.cfg.num_obj_tokens, ask_name)
    assert (obj["category"], obj["instance_id"], asked) == ("chair", 7, [])
    assert obj["category_from"].startswith("ground truth")
    assert named_objects("a chair", segments, model.cfg.num_obj_tokens, ask_name) == []


@pytest.mark.slow
def test_kv_cached_answers_equal_reencoded_ones(trained):
    from p3d.ask.answer import PrefixCache, generate_reencoded, load_model
    from p3d.ask.inputs import open_input
    from p3d.ask.prepare import checkpoint_workflow, prepare_scene
    from trainer.shard_reader import scene_inputs

    _, checkpoint, video, _, cache = trained
    run = checkpoint_workflow(checkpoint, None, [])
    scene = prepare_scene(run, open_input(video, FRAMES), cache, echo=lambda _: None)
    model, collate, mode = load_model(checkpoint)
    inputs = scene_inputs(scene.sample, mode, model.cfg.num_obj_tokens)
    # Language-model weights of a trained model's scale (the checkpoint's are near their small init, so
    # every question gets the same answer, and equal answers would prove nothing); both paths read them.
    randomize_language_model(model)
    prefix = PrefixCache(model, collate, "room", inputs)
    assert prefix.num_prefix > len(inputs["xyz"])  # the scene tokens are inside the cached prefix
    questions = ["Find the chair.", "How many lamps are in the room?", "What is <OBJ001>?", "Find the chair.",
                 "Which object is the sofa?"]
    again = [generate_reencoded(model, collate, "room", inputs, q, 12) for q in questions]
    assert len({tuple(ids) for ids in again}) >= 3, again
    assert prefix.generate_batch(questions, 12) == again  # rows padded to one length between prefix and question
    assert [prefix.generate(q, 12) for q in questions] == again  # one by one, on copies of the same prefix


@pytest.mark.slow
def test_questions_file_answers_each_line(trained, tmp_path):
    _, checkpoint, video, _, cache = trained
    qfile = tmp_path / "q.txt"
    qfile.write_text("# about the room\nFind the chair.\n\nHow many lamps are in the room?\n")
    res = _ok("ask", str(video), "--questions", str(qfile), "--checkpoint", str(checkpoint), "--cache",
              str(cache), "--json", "--html", str(tmp_path / "room.html"), "--max-new-tokens", "6")
    doc = json.loads(res.stdout)
    assert [a["question"] for a in doc["answers"]] == ["Find the chair.", "How many lamps are in the room?"]
    page = (tmp_path / "room.html").read_text()
    assert "Find the chair." in page and "plotly.js" in page and not re.findall(r"<script[^>]*\bsrc=", page)


@pytest.mark.slow
def test_a_toy_checkpoint_asks_a_filmed_toy_video_through_its_ground_truth_sidecar(trained, toy_checkpoint, tmp_path):
    """The simulators read the sidecar's poses, depth and masks at the frames sampled from the decoded mp4:
    the boxes are in the frame fitted to the true poses, the segments carry the true categories."""
    from p3d.ask.answer import named_objects
    from p3d.ask.inputs import open_input
    from p3d.ask.prepare import checkpoint_workflow, prepare_scene
    from pipeline.features import store
    from pipeline.toy.world import make_scene
    from schemas.workflow import ToyWorldConfig
    from trainer.objects import segment_identifiers

    _, _, video, _, _ = trained
    res = _ok("ask", str(video), "Find the chair.", "--checkpoint", str(toy_checkpoint), "--cache",
              str(tmp_path / "cache"), "--json")
    doc = json.loads(res.stdout)
    assert doc["kind"] == "video" and doc["scene_id"] == "room" and doc["frame"]["method"] == "sensor_poses"
    (answer,) = doc["answers"]
    assert answer["question"] == "Find the chair." and isinstance(answer["text"], str)
    for obj in answer["objects"]:
        assert obj["identifier"].startswith("<OBJ") and len(obj["box"]["center"]) == 3
    assert answer["boxes"] == [o["box"] for o in answer["objects"]]

    # The frames sampled from the 12-frame video (bin centres of 6 bins: 1, 3, ..., 11) and the sidecar's
    # rows line up: the stored cameras are the true ones at those frames (sim noise 1.5 cm, 0.5 degree).
    truth = make_scene(0, ToyWorldConfig(num_scenes=2, frames=12, seed=4, image_size=(112, 140)))
    triplets = store.read_scene(Path(doc["cache"]), "room")
    assert triplets.attrs.frame_indices == [1, 3, 5, 7, 9, 11] and triplets.attrs.source["kind"] == "video"
    centres_F3, true_F13 = triplets.pose_F44[:, :3, 3], truth.poses_F44[:, :3, 3]
    assert np.abs(centres_F3 - true_F13[1::2]).max() < 0.1
    assert np.abs(centres_F3 - true_F13[0::2]).max() > 0.2  # one frame off would show
    # Objects named by an answer come with the true category of the instance their segment matched.
    scene = prepare_scene(checkpoint_workflow(toy_checkpoint, None, []), open_input(video, FRAMES, ground_truth=True),
                          tmp_path / "cache", echo=lambda _: None)
    assert scene.cached
    categories = {o.id: o.category for o in truth.layout.objects}
    matched = [s for s in scene.sample["segments"] if s.get("category")]
    assert matched and all(s["category"] == categories[s["instance_id"]] for s in matched)
    ident = segment_identifiers(scene.sample["segments"], 32)
    seg = next(s for s in matched if s["id"] in ident)
    (obj,) = named_objects(f"<OBJ{ident[seg['id']]:03d}>", scene.sample["segments"], 32, lambda _: pytest.fail())
    assert (obj["category"], obj["instance_id"], obj["box"]) == (categories[seg["instance_id"]], seg["instance_id"],
                                                                 seg["box"])


# ---- clear errors -------------------------------------------------------------------------------

def _error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.slow
def test_short_unreadable_and_mismatched_inputs_fail_in_one_line(trained, toy_checkpoint, tmp_path):
    import shutil

    from pipeline.sources.film import write_video
    from pipeline.sources.sidecar import sidecar_path

    root, checkpoint, video, _, _ = trained
    short = write_video(np.zeros((3, 48, 64, 3), np.uint8), tmp_path / "short.mp4")
    args = ["--checkpoint", str(checkpoint), "--cache", str(tmp_path / "cache")]
    assert "too short: 3 frames" in _error_line(_invoke("ask", str(short), "Find the chair.", *args))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    assert "unreadable video" in _error_line(_invoke("ask", str(broken), "Find the chair.", *args))
    # Another encoder than the checkpoint's own: refused before anything runs.
    line = _error_line(_invoke("ask", str(root / "videos" / "room.mp4"), "Find the chair.", *args,
                               "--set", "features.encoder.model=Qwen/Qwen2.5-VL-7B-Instruct"))
    assert "not the one the checkpoint was trained on" in line and "toy:qwen2_5_vl" in line
    # A toy checkpoint's simulated networks need the ground truth a bare video (no sidecar) lacks.
    bare = Path(shutil.copy(video, tmp_path / "bare.mp4"))
    toy_args = ["--checkpoint", str(toy_checkpoint), "--cache", str(tmp_path / "cache")]
    line = _error_line(_invoke("ask", str(bare), "Find the chair.", *toy_args))
    assert "sim_vggt" in line and "sensor depth and poses" in line and "bare.groundtruth.npz" in line
    assert "geometry 'vggt'" in line  # a real video goes through the real networks
    # A sidecar describing 10 frames beside the 12-frame video: its rows cannot line up with the frames.
    cut = Path(shutil.copy(video, tmp_path / "cut.mp4"))
    with np.load(sidecar_path(video), allow_pickle=False) as data:
        rows = {k: data[k] if data[k].ndim == 0 else data[k][:10] for k in data.files}
    np.savez(sidecar_path(cut), **dict(rows, frame_count=np.int64(10)))
    line = _error_line(_invoke("ask", str(cut), "Find the chair.", *toy_args))
    assert "mismatched frame counts" in line and "10 frames" in line and "holds 12" in line
    assert "not a p3d checkpoint" in _error_line(_invoke("ask", str(short), "q", "--checkpoint", str(tmp_path)))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("*/proxies"))


@pytest.mark.slow
def test_a_video_filmed_from_one_spot_is_refused_for_lack_of_parallax(toy_checkpoint, tmp_path):
    """A tripod shot (every frame the first one, its ground truth too) gives no baseline to place the
    room in 3D: `p3d ask` says so in one line, through the whole video path, and caches nothing."""
    from dataclasses import replace

    from pipeline.sources.film import film_scene
    from pipeline.toy.scenes import ToyRenderedScenes
    from pipeline.toy.world import scene_id_for
    from schemas.workflow import ToyWorldConfig

    toy = ToyWorldConfig(num_scenes=2, frames=12, seed=4, image_size=(112, 140))
    scene = ToyRenderedScenes(toy, num_frames=1 << 30).load_scene(scene_id_for(0))
    still = {name: np.repeat(getattr(scene, name)[:1], scene.num_frames, 0)
             for name in ("images_FHW3", "depth_FHdWd", "poses_F44", "intrinsics_F33", "depth_intrinsics_F33",
                          "instances_FHW") if getattr(scene, name) is not None}
    video = film_scene(replace(scene, **still), tmp_path / "tripod.mp4")
    line = _error_line(_invoke("ask", str(video), "Find the chair.", "--checkpoint", str(toy_checkpoint),
                               "--cache", str(tmp_path / "cache")))
    assert "not enough parallax" in line and "walking around" in line, line
    assert not any((tmp_path / "cache").glob("*/proxies"))


def test_a_filmed_scene_folder_reads_back_with_the_folders_sensors_at_the_same_frames(tmp_path):
    """The demo films a held-out toy scene folder: read through its video and sidecar, the sampled frames
    carry exactly the folder's poses, intrinsics, depth, masks and objects; the pixels are the mp4's."""
    from pipeline.sources import VideoSource
    from pipeline.toy.film import film_scene_folder
    from pipeline.toy.source import ToySource
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig

    toy = ToyWorldConfig(num_scenes=1, frames=9, seed=2, image_size=(56, 70))
    build_toy_world(tmp_path, tmp_path / "scenes", toy, progress=lambda *_: None, workers=1)
    video = film_scene_folder(tmp_path / "scenes", "toy0000", tmp_path / "videos" / "toy0000.mp4")
    folder = ToySource(tmp_path / "scenes", 4, ("toy0000",)).load_scene("toy0000")
    filmed = VideoSource(video.parent, 4, ("toy0000",), ground_truth=True).load_scene("toy0000")
    assert filmed.frame_indices.tolist() == folder.frame_indices.tolist() == [1, 3, 5, 7]  # bin centres of 9 / 4
    for name in ("poses_F44", "intrinsics_F33", "depth_FHdWd", "depth_intrinsics_F33", "instances_FHW"):
        assert np.array_equal(getattr(filmed, name), getattr(folder, name)), name
    assert filmed.objects == folder.objects and filmed.source == "video"
    # Lossy, but the same frames: measured 2.1-2.5 grey levels frame for frame, 14-31 one frame off.
    assert np.abs(filmed.images_FHW3.astype(int) - folder.images_FHW3).mean() < 8
    assert VideoSource(video.parent, 4, ("toy0000",)).load_scene("toy0000").poses_F44 is None  # a bare video


def test_parallax_check_on_hand_made_cameras():
    pose_F44 = np.repeat(np.eye(4)[None], 5, 0)
    xyz_Fhw3 = np.zeros((5, 2, 2, 3)) + np.array([0.0, 0.0, 3.0])  # the room 3 m in front
    # A tripod pan: the centres stay put.
    assert "not enough parallax" in check_parallax(pose_F44, xyz_Fhw3)
    # A walk of 1 m along x: RMS spread sqrt(mean((x - 0.5)^2)) over x = 0, .25, .5, .75, 1 = 0.354 m.
    pose_F44[:, 0, 3] = np.linspace(0, 1, 5)
    spread = np.sqrt(np.mean((np.linspace(0, 1, 5) - 0.5) ** 2))
    assert spread == pytest.approx(0.3536, abs=1e-4) and spread > MIN_PARALLAX * 3.0
    assert check_parallax(pose_F44, xyz_Fhw3) is None
    # Just under the threshold: the walk scaled to MIN_PARALLAX * depth * 0.9.
    pose_F44[:, 0, 3] *= 0.9 * MIN_PARALLAX * 3.0 / spread
    assert "not enough parallax" in check_parallax(pose_F44, xyz_Fhw3)


# ---- a checkpoint in the real format ------------------------------------------------------------

@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """Qwen2.5-VL-7B-Instruct's own config (shrunk to a few widths) and tokenizer with its chat template,
    saved with `save_pretrained`, built into a stage-4 p3d export beside a resolved workflow that names
    the real checkpoints."""
    import shutil

    from tests.conftest import SHARED

    qwen_dir = SHARED / "reference" / "configs" / "Qwen__Qwen2.5-VL-7B-Instruct"
    files = ("vocab.json", "merges.txt", "tokenizer_config.json", "chat_template.json", "preprocessor_config.json")
    if not all((qwen_dir / f).exists() for f in files + ("config.json",)):
        pytest.skip(f"Qwen2.5-VL config and tokenizer files not found in {qwen_dir}")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from schemas.workflow import Workflow
    from trainer.model import Proxy3DModel

    root = tmp_path_factory.mktemp("real")
    base = root / "base"
    base.mkdir()
    for name in files:
        shutil.copy(qwen_dir / name, base / name)
    config = Qwen2_5_VLConfig.from_pretrained(qwen_dir)
    text, vision = config.text_config, config.vision_config
    for key, value in dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, layer_types=["full_attention"]).items():
        setattr(text, key, value)
    text.rope_parameters = dict(text.rope_parameters, mrope_section=[2, 3, 3])  # head_dim 16 / 2
    for key, value in dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[0]).items():
        setattr(vision, key, value)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(base)
    model = Proxy3DModel.build(str(base), feat_dim=64, num_obj_tokens=8, categories=["chair"], height_bins=16,
                               height_range=(0.0, 4.0), fourier_dim=8)
    model.cfg.stages_done = [1, 2, 3, 4]
    checkpoint = model.export(root / "train" / "stage4" / "model")
    wf = Workflow.model_validate({
        "name": "scannet", "out": str(root / "data"), "source": {"kind": "scannet", "path": str(root / "scans")},
        "features": {"geometry": {"kind": "vggt"}, "segmenter": {"kind": "sam2"}},
        "train": {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "out": str(root / "train")}})
    (checkpoint.parent / "resolved_workflow.yaml").write_text(yaml.safe_dump(wf.model_dump(mode="json")))
    return root, checkpoint


@pytest.mark.slow
def test_real_format_checkpoint_loads_reads_its_workflow_and_answers_from_the_cached_prefix(real_checkpoint, trained,
                                                                                          tmp_path):
    from p3d.ask.answer import PrefixCache, answer_questions, generate_reencoded, load_model
    from p3d.ask.inputs import open_input
    from p3d.ask.prepare import AskError, check_backends, check_store_scene, checkpoint_workflow
    from schemas.config_features import QWEN_VL_DEFAULT
    from tests.synthetic_shards import write_synthetic
    from trainer.shard_reader import iter_scenes, scene_inputs

    root, checkpoint = real_checkpoint
    run = checkpoint_workflow(checkpoint, None, [])
    assert run.workflow.features.encoder.model == QWEN_VL_DEFAULT
    check_backends(run, open_input(trained[2], FRAMES))  # VGGT + SAM 2 need nothing a video lacks
    with pytest.raises(AskError, match="not the one the checkpoint was trained on"):
        checkpoint_workflow(checkpoint, None, ["features.encoder.model=toy:qwen2_5_vl"])
    # A store scene made by the toy encoder (the video's, asked into a cache of this test's own) is refused.
    _ok("ask", str(trained[2]), "Find the chair.", "--checkpoint", str(trained[1]), "--cache", str(tmp_path))
    (group,) = tmp_path.glob("room-*/features/room")
    with pytest.raises(AskError, match="made by encoder toy:qwen2_5_vl"):
        check_store_scene(run, open_input(group, FRAMES))

    model, collate, mode = load_model(checkpoint)
    assert mode == "proxy" and "You are a helpful assistant." in model.tokenizer.chat_template
    randomize_language_model(model)
    shards, _ = write_synthetic(root / "syn", num_scenes=1, dim=64)
    sample = next(iter(iter_scenes(shards, shuffle=False)))
    inputs = scene_inputs(sample, mode, model.cfg.num_obj_tokens)
    prefix = PrefixCache(model, collate, sample["scene_id"], inputs)
    # The real template's system turn and the scene are the prefix: K scene tokens and more.
    assert prefix.num_prefix > len(inputs["xyz"]) + 5
    questions = ["Find the chair.", "What is <OBJ001>?", "How many lamps are in the room?"]
    again = [generate_reencoded(model, collate, sample["scene_id"], inputs, q, 5) for q in questions]
    assert len({tuple(ids) for ids in again}) >= 2 and prefix.generate_batch(questions, 5) == again
    texts = [a.text for a in answer_questions(model, collate, mode, sample, ["Find the chair."], 5)]
    assert texts == [a.text for a in answer_questions(model, collate, mode, sample, ["Find the chair."], 5,
                                                      kv_cache=False)]


def test_an_alignment_refusal_for_lack_of_parallax_is_named_as_such():
    """The feature stage's reason for a scene whose sensor cameras barely moved (align.py's own words)
    becomes the user's one line; other reasons pass through unchanged."""
    import pipeline.features.align as align
    from p3d.ask.prepare import _feature_failure

    still_F44 = np.repeat(np.eye(4)[None], 4, 0)
    with pytest.raises(ValueError) as refused:
        align.fit_to_sensor_poses(still_F44, still_F44)
    line = _feature_failure(f"ValueError: {refused.value}")
    assert line.startswith("not enough parallax to place the scene in 3D") and "walking around" in line
    assert _feature_failure("SceneReadError: frame 3 unreadable") == "SceneReadError: frame 3 unreadable"
