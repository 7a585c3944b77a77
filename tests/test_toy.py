"""The toy world: layouts, the renderer, ground-truth self-consistency, records, `p3d toy`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from p3d.cli import app
from pipeline.sources.base import uniform_indices
from pipeline.toy.layout import intrinsics_for, look_pose, sample_layout
from pipeline.toy.render import BoxScene, render
from pipeline.toy.shapes import CATEGORIES, CATEGORY_BY_NAME, rotate_parts
from pipeline.toy.source import ToySource
from pipeline.toy.world import make_scene, required_views, split_for, views_per_object
from schemas.manifest import ObjectInfo
from schemas.record import OBJ_PLACEHOLDER, TASKS, load_records
from schemas.workflow import ToyWorldConfig

NUM_SCENES, NUM_FRAMES = 4, 24


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small world built through the real CLI."""
    root = tmp_path_factory.mktemp("toy")
    result = CliRunner().invoke(app, ["toy", "--out", str(root), "--scenes", str(NUM_SCENES),
                                      "--frames", str(NUM_FRAMES), "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "[4/4]" in result.output  # progress is printed per scene
    return root


def test_the_world_does_not_depend_on_the_number_of_workers(world, tmp_path):
    # The fixture rendered with the default pool (one process per core); this one in-process.
    result = CliRunner().invoke(app, ["toy", "--out", str(tmp_path), "--scenes", str(NUM_SCENES),
                                      "--frames", str(NUM_FRAMES), "--seed", "0", "--workers", "1"])
    assert result.exit_code == 0, result.output

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    pooled, single = files(world), files(tmp_path)
    assert len(single) > NUM_SCENES * NUM_FRAMES and pooled.keys() == single.keys()
    assert [k for k in pooled if pooled[k] != single[k]] == []


def _objects(root: Path, scene_id: str) -> list[ObjectInfo]:
    return [ObjectInfo.model_validate(o)
            for o in json.loads((root / "scenes" / scene_id / "objects.json").read_text())]


# ---- layout ---------------------------------------------------------------------------------

def test_categories_have_distinct_shapes_and_palettes():
    assert len({c.name for c in CATEGORIES}) >= 10
    signatures = set()
    for c in CATEGORIES:
        size = np.array(c.size_lo)
        parts = c.build(*size)
        # Part extents relative to the object's size: two categories sharing a shape would collide.
        sig = tuple(sorted(tuple(np.round(np.r_[lo, hi] / np.r_[size, size], 2)) for lo, hi, _ in parts))
        signatures.add(sig)
        assert c.palette, c.name
        for lo, hi, _ in parts:  # every part inside the object's own box
            assert np.all(lo >= -1e-9) and np.all(hi <= size + 1e-9) and np.all(hi > lo), c.name
    assert len(signatures) == len(CATEGORIES)


def test_category_is_visible_in_colour():
    """The random toy encoder sees colour, not shape: no colour is shared between categories, and
    every shade of one category is further from every other category's shades than 30 (RGB)."""
    names = [(c.name, colour) for c in CATEGORIES for colour, _ in c.palette]
    assert len({colour for _, colour in names}) == len(names)
    for a in CATEGORIES:
        for b in CATEGORIES:
            if a.name < b.name:
                gap = min(np.linalg.norm(np.subtract(ra, rb)) for _, ra in a.palette for _, rb in b.palette)
                assert gap > 30, (a.name, b.name, gap)


def test_rotate_parts_quarter_turns():
    size = np.array([1.2, 0.5, 0.8])
    parts = CATEGORIES[2].build(*size)
    once = rotate_parts(parts, size, 1)
    for (lo, hi, _), (rlo, rhi, _) in zip(parts, once):
        # Volume and height kept; the footprint's sides swap.
        assert np.isclose(np.prod(hi - lo), np.prod(rhi - rlo))
        assert np.allclose(sorted((hi - lo)[:2]), sorted((rhi - rlo)[:2]))
        assert np.all(rlo[:2] >= -1e-9) and rhi[0] <= size[1] + 1e-9 and rhi[1] <= size[0] + 1e-9
    for (lo, hi, _), (rlo, rhi, _) in zip(parts, rotate_parts(parts, size, 4)):
        assert np.allclose(lo, rlo) and np.allclose(hi, rhi)


def test_layouts_are_valid_rooms():
    seen_categories = set()
    for seed in range(25):
        layout = sample_layout(np.random.default_rng(seed))
        lx, ly, lz = layout.size_3
        assert 3 <= lx <= 8 and 3 <= ly <= 8 and 2.5 <= lz <= 3.1
        assert 4 <= len(layout.objects) <= 12
        assert [o.id for o in layout.objects] == list(range(len(layout.objects)))
        for o in layout.objects:
            seen_categories.add(o.category)
            assert np.all(o.lo_3 >= 0) and np.all(o.hi_3 <= layout.size_3)
            # The box is exactly the union of the parts.
            assert np.allclose(o.lo_3, np.min([lo for lo, _, _ in o.parts], 0))
            assert np.allclose(o.hi_3, np.max([hi for _, hi, _ in o.parts], 0))
            if o.support is None:
                assert o.lo_3[2] == 0
            else:
                s = layout.objects[o.support]
                assert np.isclose(o.lo_3[2], s.hi_3[2])
                assert np.all(o.lo_3[:2] >= s.lo_3[:2] - 1e-9) and np.all(o.hi_3[:2] <= s.hi_3[:2] + 1e-9)
            # The camera's disc is free.
            nearest = np.clip(layout.center_2, o.lo_3[:2], o.hi_3[:2])
            assert np.linalg.norm(nearest - layout.center_2) >= layout.free_radius - 1e-9
        for i, a in enumerate(layout.objects):
            for b in layout.objects[i + 1:]:
                overlap = np.minimum(a.hi_3, b.hi_3) - np.maximum(a.lo_3, b.lo_3)
                assert np.any(overlap <= 1e-9), (seed, a.category, b.category)
    assert len(seen_categories) >= 10


# ---- renderer -------------------------------------------------------------------------------

def _one_box_scene(with_box: bool) -> BoxScene:
    lo = np.array([[1.8, 2.5, 1.3]]) if with_box else np.zeros((0, 3))
    hi = np.array([[2.2, 2.7, 1.7]]) if with_box else np.zeros((0, 3))
    return BoxScene(np.array([4.0, 4.0, 3.0]), (100, 100, 100), (200, 200, 200), lo, hi,
                    np.array([[255.0, 0, 0]])[: len(lo)], np.array([7], np.int32)[: len(lo)])


def test_render_matches_analytic_depth_and_footprint():
    hw = (60, 80)
    k = intrinsics_for(hw)
    pose = look_pose(np.array([2.0, 0.5, 1.5]), np.pi / 2, 0.0)  # looking along +y
    empty = render(_one_box_scene(False), pose, k, hw)
    # Straight ahead the back wall (y = 4) is 3.5 m away; z-depth is the same across that wall.
    centre = (int(round(k[1, 2])), int(round(k[0, 2])))
    assert np.isclose(empty.depth_HW[centre], 3.5, atol=1e-5)
    assert np.all(empty.instance_HW == -1)

    out = render(_one_box_scene(True), pose, k, hw)
    mask = out.instance_HW == 7
    assert np.allclose(out.depth_HW[mask], 2.0, atol=1e-5)  # the box's front face at y = 2.5
    # Its pixels are exactly those whose rays cross the face's rectangle (|x|, |z| <= 0.2 at 2 m).
    v, u = np.mgrid[0:hw[0], 0:hw[1]]
    x = (u - k[0, 2]) / k[0, 0] * 2.0
    y = (v - k[1, 2]) / k[1, 1] * 2.0
    expected = (np.abs(x) < 0.2 - 1e-6) & (np.abs(y) < 0.2 - 1e-6)
    boundary = (np.abs(np.abs(x) - 0.2) < 1e-6) | (np.abs(np.abs(y) - 0.2) < 1e-6)
    assert np.array_equal(mask & ~boundary, expected & ~boundary)
    assert mask.sum() > 20


def test_culled_render_equals_brute_force():
    cfg = ToyWorldConfig(num_scenes=1, frames=4, image_size=(48, 64))
    scene = make_scene(0, cfg)
    from pipeline.toy.world import _box_scene

    boxes = _box_scene(scene.layout)
    for pose in scene.poses_F44:
        fast = render(boxes, pose, scene.k_33, cfg.image_size, cull=True)
        slow = render(boxes, pose, scene.k_33, cfg.image_size, cull=False)
        assert np.array_equal(fast.instance_HW, slow.instance_HW)
        assert np.array_equal(fast.depth_HW, slow.depth_HW)
        assert np.array_equal(fast.rgb_HW3, slow.rgb_HW3)


def test_make_scene_is_deterministic_per_seed():
    cfg = ToyWorldConfig(num_scenes=2, frames=6, image_size=(48, 64))
    a, b = make_scene(1, cfg), make_scene(1, cfg)
    assert np.array_equal(a.poses_F44, b.poses_F44)
    assert all(np.array_equal(x.rgb_HW3, y.rgb_HW3) for x, y in zip(a.frames, b.frames))
    assert [r.model_dump() for r in a.records] == [r.model_dump() for r in b.records]
    c = make_scene(1, cfg.model_copy(update={"seed": 5}))
    assert not np.allclose(a.layout.size_3, c.layout.size_3)


# ---- the written world ----------------------------------------------------------------------

def test_world_layout_on_disk(world):
    assert json.loads((world / "categories.json").read_text()) == [c.name for c in CATEGORIES]
    scene_dirs = sorted(p.name for p in (world / "scenes").iterdir())
    assert scene_dirs == [f"toy{i:04d}" for i in range(NUM_SCENES)]
    d = world / "scenes" / "toy0000"
    for sub, suffix in (("color", "jpg"), ("depth", "png"), ("pose", "txt"), ("instance-filt", "png")):
        assert sorted(int(p.stem) for p in (d / sub).glob(f"*.{suffix}")) == list(range(NUM_FRAMES))
    k = np.loadtxt(d / "intrinsic" / "intrinsic_color.txt")
    assert k.shape == (4, 4) and np.allclose(k[3], [0, 0, 0, 1]) and np.allclose(k[:3, 3], 0)
    from PIL import Image

    with Image.open(d / "depth" / "0.png") as im:
        assert im.mode in ("I;16", "I") and im.size == (320, 240)
    splits = [json.loads((world / "scenes" / s / "manifest.json").read_text())["split"] for s in scene_dirs]
    assert splits == ["train", "train", "train", "val"]
    assert [split_for(i, 8) for i in range(8)] == ["train"] * 6 + ["val"] * 2
    assert [split_for(i, 7, 3) for i in range(7)] == ["train"] * 4 + ["val"] * 3
    assert [split_for(i, 3, 0) for i in range(3)] == ["train"] * 3
    with pytest.raises(ValueError, match="more than num_scenes"):
        ToyWorldConfig(num_scenes=3, val_scenes=4)


def test_ground_truth_is_self_consistent(world):
    """Unproject depth with poses and intrinsics: every object's pixels land inside its box, room
    pixels land outside all boxes, and each object is seen in several frames."""
    source = ToySource(world / "scenes", NUM_FRAMES)
    for scene_id in source.scene_ids():
        scene = source.load_scene(scene_id)
        assert scene.num_frames == NUM_FRAMES and scene.image_size == (240, 320)
        boxes = {o.id: (o.box.min, o.box.max) for o in scene.objects}
        frames_seen = {i: 0 for i in boxes}
        for f in range(scene.num_frames):
            depth = scene.depth_FHdWd[f]
            k = scene.depth_intrinsics_F33[f]
            v, u = np.nonzero(depth > 0)
            z = depth[v, u]
            cam_N3 = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], 1)
            world_N3 = cam_N3 @ scene.poses_F44[f, :3, :3].T + scene.poses_F44[f, :3, 3]
            labels = scene.instances_FHW[f][v, u]
            tol = 0.01  # depth is stored in whole millimetres
            for obj_id, (lo, hi) in boxes.items():
                pts = world_N3[labels == obj_id]
                assert np.all((pts >= lo - tol) & (pts <= hi + tol)), (scene_id, f, obj_id)
                if len(pts) >= 40:
                    frames_seen[obj_id] += 1
            room_pts = world_N3[labels == -1]
            for lo, hi in boxes.values():
                inside = np.all((room_pts > lo + tol) & (room_pts < hi - tol), axis=1)
                assert not inside.any(), scene_id
            assert np.all(world_N3[:, 2] > -tol)  # nothing below the floor
        assert min(frames_seen.values()) >= 3, (scene_id, frames_seen)
        # The camera flies at about 1.5 m.
        assert np.allclose(scene.poses_F44[:, 2, 3], 1.5, atol=0.1)


def test_reader_samples_uniformly(world):
    scene = ToySource(world / "scenes", 5).load_scene("toy0001")
    assert scene.frame_indices.tolist() == uniform_indices(NUM_FRAMES, 5).tolist()
    assert scene.num_frames_total == NUM_FRAMES and scene.split == "train"
    pose = np.loadtxt(world / "scenes" / "toy0001" / "pose" / f"{scene.frame_indices[2]}.txt")
    assert np.allclose(scene.poses_F44[2], pose, atol=1e-6)


# ---- records --------------------------------------------------------------------------------

def test_records_follow_the_geometry(world):
    records = load_records(world / "annotations.jsonl")
    assert len({r.id for r in records}) == len(records)
    tasks = {r.task for r in records}
    required = {"object_name", "object_id", "counting", "object_size", "distance", "room_size",
                "relative_direction", "grounding", "multi_grounding", "caption"}
    assert required <= tasks <= set(TASKS)
    objects = {s: {o.id: o for o in _objects(world, s)} for s in {r.scene_id for r in records}}
    manifests = {s: json.loads((world / "scenes" / s / "manifest.json").read_text()) for s in objects}
    for r in records:
        objs = objects[r.scene_id]
        assert r.split == manifests[r.scene_id]["split"]
        assert len(r.target_boxes) == len(r.target_ids)
        for i, box in zip(r.target_ids, r.target_boxes):
            assert box == objs[i].box
        if OBJ_PLACEHOLDER in r.question:
            assert r.question.count(OBJ_PLACEHOLDER) == len(r.target_ids), r.id
        if r.answer_type == "number":
            assert re.fullmatch(r"\d+(\.\d)?", r.answers[0]), r.answers
        if r.task == "object_name":
            assert r.answers == [objs[r.target_ids[0]].category]
        elif r.task == "counting":
            cat = next(c.name for c in CATEGORIES if f"many {c.plural_name} " in r.question)
            assert int(r.answers[0]) == sum(o.category == cat for o in objs.values())
            # The counted objects are the targets (what count_by_listing names before the count).
            assert sorted(r.target_ids) == sorted(i for i, o in objs.items() if o.category == cat)
        elif r.task in ("object_id", "grounding", "multi_grounding"):
            assert r.answer_type == "objects"
            cats = {objs[i].category for i in r.target_ids}
            names = {c: (c, CATEGORY_BY_NAME[c].plural_name) for c in cats}
            assert len(cats) <= 1 and all(any(n in r.question for n in names[c]) for c in cats)
            if r.task == "grounding":
                assert len(r.target_ids) == 1
                num_same = sum(o.category == objs[r.target_ids[0]].category for o in objs.values())
                assert r.unique == (num_same == 1)
            if r.task == "multi_grounding" and cats:
                cat = cats.pop()
                assert sorted(r.target_ids) == sorted(i for i, o in objs.items() if o.category == cat)
        elif r.task == "distance":
            a, b = (np.array(objs[i].box.center) for i in r.target_ids)
            assert abs(float(r.answers[0]) - np.linalg.norm(a - b)) <= 0.051
        elif r.task == "object_size" and r.question_type == "height":
            assert abs(float(r.answers[0]) - objs[r.target_ids[0]].box.size[2]) <= 0.051
        elif r.task == "relative_direction":
            o, f, q = (np.array(objs[i].box.center)[:2] for i in r.target_ids)
            fwd, to_q = f - o, q - o
            cross = fwd[0] * to_q[1] - fwd[1] * to_q[0]
            assert r.answers == ["left" if cross > 0 else "right"] and r.choices == ["left", "right"]
        elif r.task == "caption":
            assert objs[r.target_ids[0]].category in r.answers[0]
    by_task = {t: sum(r.task == t for r in records) for t in required}
    assert all(n > 0 for n in by_task.values()), by_task
    assert any(r.unique for r in records if r.task == "grounding")
    assert any(len(r.target_ids) == 0 for r in records if r.task == "multi_grounding")


def test_cli_workflow_writes_to_source_path(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        f"name: t\nout: {tmp_path / 'data'}\nsource:\n  kind: toy\n  path: {tmp_path / 'data' / 'scenes'}\n"
        "  toy:\n    num_scenes: 1\n    frames: 6\n    seed: 3\n    image_size: [48, 64]\n"
    )
    result = CliRunner().invoke(app, ["toy", "--workflow", str(wf)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "scenes" / "toy0000" / "manifest.json").is_file()
    assert load_records(tmp_path / "data" / "annotations.jsonl")
    provenance = json.loads((tmp_path / "data" / "toy_world.json").read_text())
    assert provenance["config"]["seed"] == 3 and provenance["config"]["image_size"] == [48, 64]
    scene = ToySource(tmp_path / "data" / "scenes", 6).load_scene("toy0000")
    assert scene.image_size == (48, 64)
    # A smaller rebuild removes the scenes that are no longer part of the world.
    (tmp_path / "data" / "scenes" / "toy0007").mkdir()
    assert CliRunner().invoke(app, ["toy", "--workflow", str(wf)]).exit_code == 0
    assert not (tmp_path / "data" / "scenes" / "toy0007").exists()


def test_views_per_object_counts_frames():
    cfg = ToyWorldConfig(num_scenes=1, frames=8, image_size=(60, 80))
    scene = make_scene(0, cfg)
    counts = views_per_object(scene.layout, scene.frames)
    manual = {o.id: sum(int((f.instance_HW == o.id).sum() >= 40) for f in scene.frames) for o in scene.layout.objects}
    assert counts == manual and min(counts.values()) >= required_views(8)


def test_a_current_world_is_kept_so_features_resume_and_force_renders_it_again(tmp_path):
    """`p3d toy` again with the same config (the demo's first step on a rerun) keeps the world: its
    files keep their mtimes, so the feature stage's source fingerprint (names, sizes, mtimes) is the
    one the store was made from and nothing downstream is redone. `--force`, another config or a
    missing scene renders it again."""
    wf = tmp_path / "wf.yaml"
    body = (f"name: t\nout: {tmp_path / 'data'}\nsource:\n  kind: toy\n  path: {tmp_path / 'data' / 'scenes'}\n"
            "  toy:\n    num_scenes: 2\n    frames: 6\n    seed: 3\n    image_size: [48, 64]\n")
    wf.write_text(body)
    scenes = tmp_path / "data" / "scenes"

    def render(*extra: str) -> str:
        result = CliRunner().invoke(app, ["toy", "--workflow", str(wf), *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def stamps() -> dict[str, int]:
        return {str(p.relative_to(scenes)): p.stat().st_mtime_ns for p in sorted(scenes.rglob("*")) if p.is_file()}

    def fingerprints() -> list[str]:
        source = ToySource(scenes, 6)  # the features stage's reader of a rendered world
        return [source.fingerprint(s) for s in ("toy0000", "toy0001")]

    render()
    before, made_from = stamps(), fingerprints()
    assert before
    out = render()
    assert "is current" in out and "[1/2]" not in out
    assert stamps() == before and fingerprints() == made_from
    assert "[1/2]" in render("--force") and stamps() != before
    (tmp_path / "data" / "toy_world.json").write_text("{")  # provenance unreadable: not ours, rendered
    assert "[1/2]" in render()
    shutil.rmtree(scenes / "toy0001")
    assert "[2/2] toy0001" in render() and (scenes / "toy0001" / "manifest.json").is_file()
    wf.write_text(body.replace("seed: 3", "seed: 4"))
    assert "[1/2]" in render()
    assert json.loads((tmp_path / "data" / "toy_world.json").read_text())["config"]["seed"] == 4
