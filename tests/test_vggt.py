"""Our VGGT against the reference bundle (official outputs of facebookresearch/vggt @ 44b3afb).

The bundle is read in place through the `vggt_reference` fixture (skips where it is absent).
Tolerances are the bundle's: 1e-4 absolute on every float array, atol 1e-4 + rtol 1e-5 on
geometry, exact equality on preprocessing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.models.geometry_vggt import VGGTGeometry, rescale_intrinsics
from pipeline.models.vggt import (
    VGGT,
    VGGTConfig,
    estimate_scale,
    load_vggt,
    pose_encoding_to_cameras,
    preprocess_images,
    random_vggt,
    save_vggt,
    unproject_depth,
)
from pipeline.models.vggt.aggregator import resize_pos_embed
from pipeline.models.vggt.heads import uv_pos_embed
from pipeline.models.vggt.layers import RotaryEmbedding2D
from pipeline.models.vggt.preprocess import resize_frames

ATOL = 1e-4
INPUTS = ("in1", "in2", "in3")
OUTPUTS = ("pose_enc", "pose_enc_list", "depth", "depth_conf", "world_points", "world_points_conf")


def max_abs(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.fixture(scope="module", params=["A", "B"])
def reference_model(request, vggt_reference):
    name = request.param
    cfg = VGGTConfig.from_json(vggt_reference / f"config_{name}.json")
    model = load_vggt(vggt_reference / f"weights_{name}.safetensors", config=cfg)
    return name, model, np.load(vggt_reference / f"io_{name}.npz")


def test_reference_configs_parse(vggt_reference):
    cfg_a = VGGTConfig.from_json(vggt_reference / "config_A.json")
    cfg_b = VGGTConfig.from_json(vggt_reference / "config_B.json")
    agg_a = cfg_a.aggregator
    assert (agg_a.patch_embed, agg_a.depth, cfg_a.camera_head.num_heads) == ("conv", 6, 4)
    assert cfg_a.depth_head.out_channels == (16, 24, 32, 40) and cfg_a.point_head.activation == "inv_log"
    assert cfg_b.aggregator.patch_embed == "dinov2_vits14_reg" and cfg_b.aggregator.dino_num_blocks == 2
    assert cfg_b.camera_head.mlp_ratio == 1 and cfg_b.depth_head.intermediate_layer_idx == (0, 0, 1, 1)
    assert VGGTConfig.from_dict(json.loads(json.dumps(cfg_b.to_dict()))) == cfg_b


@pytest.mark.parametrize("inp", INPUTS)
def test_forward_matches_reference(reference_model, inp):
    name, model, io = reference_model
    images = torch.from_numpy(io[f"{inp}__images"])
    with torch.inference_mode():
        before = model.aggregator.embed(images)
        out = model(images, return_tokens=True)
    assert max_abs(before, io[f"{inp}__tokens_before_first_block"]) <= ATOL
    if name == "B":
        with torch.inference_mode():
            dino = model.aggregator.patch_embed(
                ((images - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
                 / torch.tensor([0.229, 0.224, 0.225])[:, None, None]).flatten(0, 1))
        assert max_abs(dino, io[f"{inp}__dinov2_x_norm_patchtokens"]) <= ATOL
    layers = [k for k in io.files if k.startswith(f"{inp}__aggregated_tokens_")]
    assert layers
    for key in layers:
        assert max_abs(out["aggregated_tokens"][int(key.rsplit("_", 1)[1])], io[key]) <= ATOL, key
    for key in OUTPUTS:
        assert max_abs(out[key], io[f"{inp}__{key}"]) <= ATOL, key


def test_dpt_intermediates_match_reference(reference_model):
    _, model, io = reference_model
    prefix = "in3__depth_head_debug__"
    captured: dict[str, np.ndarray] = {}
    hooks = []
    for key in io.files:
        if not key.startswith(prefix):
            continue
        module_name, where = key[len(prefix):].rsplit("__", 1)
        module = model.depth_head.get_submodule(module_name)

        def hook(_mod, args, output, key=key, where=where):
            captured[key] = (args[0] if where == "in" else output).detach().clone().numpy()

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(io["in3__images"]))
    finally:
        for handle in hooks:
            handle.remove()
    expected = [k for k in io.files if k.startswith(prefix)]
    assert sorted(captured) == sorted(expected)
    for key in expected:
        assert max_abs(captured[key], io[key]) <= ATOL, key


@pytest.mark.parametrize("name", ["A", "B"])
def test_cameras_and_unprojection_match_reference(vggt_reference, name):
    geo = np.load(vggt_reference / f"geometry_{name}.npz")
    for inp in INPUTS:
        image_hw = tuple(int(v) for v in geo[f"{inp}__image_size_hw"])
        extrinsics, intrinsics = pose_encoding_to_cameras(geo[f"{inp}__pose_enc"], image_hw)
        np.testing.assert_allclose(extrinsics, geo[f"{inp}__extrinsics"], atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(intrinsics, geo[f"{inp}__intrinsics"], atol=1e-4, rtol=1e-5)
        for b in range(len(extrinsics)):
            points = unproject_depth(
                geo[f"{inp}__depth"][b], geo[f"{inp}__extrinsics"][b], geo[f"{inp}__intrinsics"][b]
            )
            expected = geo[f"{inp}__world_points_from_depth"][b]
            np.testing.assert_allclose(points, expected, atol=1e-4, rtol=1e-5)


def test_preprocessing_is_bit_exact(vggt_reference):
    cases = json.loads((vggt_reference / "preprocess_cases.json").read_text())["cases"]
    vectors = np.load(vggt_reference / "preprocess_vectors.npz")
    assert len(cases) == 4
    for case, spec in cases.items():
        ours = preprocess_images([vggt_reference / "preprocess" / f for f in spec["files"]], spec["mode"])
        expected = vectors[f"{case}__uint8"]
        assert ours.dtype == np.uint8 and ours.shape == expected.shape, case
        assert np.array_equal(ours, expected), case


def test_unit_vectors(vggt_reference):
    vec = np.load(vggt_reference / "unit_vectors.npz")
    rope = RotaryEmbedding2D(100.0)
    for case in ("rope_small", "rope_1b_392x518"):
        out = rope(torch.from_numpy(vec[f"{case}__tokens_in"]), torch.from_numpy(vec[f"{case}__positions"]))
        assert max_abs(out, vec[f"{case}__tokens_out"]) <= 1e-5, case
    for case, (channels, height, width, image_h, image_w) in {
        "dpt_pe_grid_392x518": (64, 28, 37, 392, 518),
        "dpt_pe_fullres_70x98": (8, 70, 98, 70, 98),
        "dpt_pe_grid_84x56": (24, 6, 4, 84, 56),
    }.items():
        pe = uv_pos_embed(channels, (height, width), image_w / image_h, torch.device("cpu"))
        assert max_abs(pe, vec[f"{case}__pos_embed"]) <= 1e-6, case
    table = torch.from_numpy(vec["dino_interp__pos_embed_1x1370x8"])
    for key in (k for k in vec.files if k.startswith("dino_interp__") and "pos_embed" not in k):
        height, width = (int(v) for v in key.split("__")[1].split("x"))
        assert max_abs(resize_pos_embed(table, (height // 14, width // 14)), vec[key]) <= 1e-4, key


def test_full_size_model_has_exactly_the_manifest_keys(vggt_reference):
    manifest = {}
    for line in (vggt_reference / "manifest_vggt_1b.tsv").read_text().splitlines():
        if line.startswith(("#", "key\t")):
            continue
        key, shape = line.split("\t")[:2]
        manifest[key] = tuple(int(s) for s in shape.split(","))
    assert len(manifest) == 1797
    with torch.device("meta"):
        model = VGGT(VGGTConfig.vggt_1b())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # The track head (point tracking) is not implemented; the loader skips its weights.
    expected = {k: v for k, v in manifest.items() if not k.startswith("track_head.")}
    assert set(ours) == set(expected)
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert sum(int(np.prod(v)) for v in ours.values()) == 1_190_596_120


def test_full_size_forward_shapes_on_meta():
    """The shapes table of ARCHITECTURE.md section 5, traced without allocating any memory."""
    with torch.device("meta"):
        model = VGGT(VGGTConfig.vggt_1b())
    seen: dict[str, tuple[int, ...]] = {}
    names = [f"resize_layers.{k}" for k in range(4)] + [f"scratch.refinenet{k}" for k in range(1, 5)]
    hooks = [model.depth_head.get_submodule(n).register_forward_hook(
        lambda _m, _a, out, n=n: seen.__setitem__(n, tuple(out.shape))) for n in names]
    with torch.inference_mode():
        out = model(torch.empty(1, 2, 3, 392, 518, device="meta"), return_tokens=True)
    for handle in hooks:
        handle.remove()
    assert tuple(out["aggregated_tokens"].shape) == (24, 1, 2, 1041, 2048)
    assert tuple(out["pose_enc_list"].shape) == (4, 1, 2, 9)
    assert tuple(out["depth"].shape) == (1, 2, 392, 518, 1)
    assert tuple(out["world_points"].shape) == (1, 2, 392, 518, 3)
    assert seen == {
        "resize_layers.0": (2, 256, 112, 148), "resize_layers.1": (2, 512, 56, 74),
        "resize_layers.2": (2, 1024, 28, 37), "resize_layers.3": (2, 1024, 14, 19),
        "scratch.refinenet4": (2, 256, 28, 37), "scratch.refinenet3": (2, 256, 56, 74),
        "scratch.refinenet2": (2, 256, 112, 148), "scratch.refinenet1": (2, 256, 224, 296),
    }


def test_user_paths_folder_and_pt(vggt_reference, tmp_path):
    cfg = VGGTConfig.from_json(vggt_reference / "config_A.json")
    model = load_vggt(vggt_reference / "weights_A.safetensors", config=cfg)
    io = np.load(vggt_reference / "io_A.npz")
    images = torch.from_numpy(io["in2__images"])

    folder = save_vggt(model, tmp_path / "vggt_a")
    state = dict(model.state_dict())
    state["track_head.fnet.weight"] = torch.zeros(2, 2)  # the official checkpoint carries these
    torch.save({"model": state}, tmp_path / "a.pt")
    for source in (folder, folder / "model.safetensors"):
        with torch.inference_mode():
            depth = load_vggt(source)(images)["depth"]
        assert max_abs(depth, io["in2__depth"]) <= ATOL
    with torch.inference_mode():
        depth = load_vggt(tmp_path / "a.pt", config=cfg)(images)["depth"]
    assert max_abs(depth, io["in2__depth"]) <= ATOL

    del state["aggregator.camera_token"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt"):
        load_vggt(tmp_path / "broken.pt", config=cfg)
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_vggt("nobody-p3d/no-such-vggt")


def test_bf16_aggregator_stays_close(vggt_reference):
    cfg = VGGTConfig.from_json(vggt_reference / "config_B.json")
    model = load_vggt(vggt_reference / "weights_B.safetensors", dtype="bfloat16", config=cfg)
    assert model.aggregator.camera_token.dtype == torch.bfloat16
    assert model.depth_head.norm.weight.dtype == torch.float32
    io = np.load(vggt_reference / "io_B.npz")
    with torch.inference_mode():
        out = model(torch.from_numpy(io["in1__images"]))
    assert out["depth"].dtype == torch.float32
    ref = io["in1__depth"]
    rel = np.abs(out["depth"].numpy() - ref) / np.abs(ref)
    assert np.median(rel) < 2e-2
    assert max_abs(out["pose_enc"], io["in1__pose_enc"]) < 0.1


@pytest.fixture(scope="module")
def toy_geometry(tmp_path_factory):
    folder = save_vggt(random_vggt(VGGTConfig.tiny(embed_dim=32, depth=2, num_heads=2), seed=3),
                       tmp_path_factory.mktemp("vggt_toy"), toy=True)
    return VGGTGeometry(str(folder))


def _frames(num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(xx / 7.0 + f) + np.cos(yy / 5.0) for f in range(num)])
    img = (base[..., None] * 60 + 128 + rng.normal(0, 10, (num, height, width, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_geometry_backend_at_network_size_is_the_network(toy_geometry):
    images = _frames(2, 378, 518)  # already long side 518 and multiples of 14: no resize at all
    pred = toy_geometry.predict(images)
    with torch.inference_mode():
        out = toy_geometry.net(torch.from_numpy(images).permute(0, 3, 1, 2).float()[None] / 255)
    np.testing.assert_array_equal(pred["depth_FHW"], out["depth"][0, ..., 0].numpy())
    extrinsics, intrinsics = pose_encoding_to_cameras(out["pose_enc"][0].numpy(), (378, 518))
    np.testing.assert_allclose(pred["intrinsics_F33"], intrinsics, rtol=1e-6)
    np.testing.assert_allclose(pred["extrinsics_F34"], extrinsics, rtol=1e-6)
    assert not toy_geometry.ref.trained


def test_geometry_backend_outputs_are_consistent(toy_geometry):
    images = _frames(3, 100, 140, seed=1)
    pred = toy_geometry.predict(images)
    assert pred["xyz_FHW3"].shape == (3, 100, 140, 3) and pred["intrinsics_F33"].shape == (3, 3, 3)
    assert all(v.dtype == np.float32 for v in pred.values())
    pose, ext = pred["pose_F44"].astype(np.float64), pred["extrinsics_F34"].astype(np.float64)
    ext_44 = np.concatenate([ext, np.broadcast_to([[[0.0, 0, 0, 1]]], (3, 1, 4))], axis=1)
    np.testing.assert_allclose(pose @ ext_44, np.broadcast_to(np.eye(4), (3, 4, 4)), atol=1e-5)
    valid = np.isfinite(pred["xyz_FHW3"]).all(-1)
    assert valid.mean() > 0.5
    assert np.array_equal(valid, np.isfinite(pred["xyz_FHW3"]).any(-1))
    assert (pred["conf_FHW"][valid] >= toy_geometry.min_conf).all()
    # world points project back to their own pixel and depth through the returned cameras
    f, v, u = np.nonzero(valid)
    xyz = pred["xyz_FHW3"][f, v, u].astype(np.float64)
    cam = np.einsum("nij,nj->ni", ext[f, :, :3], xyz) + ext[f, :, 3]
    pix = np.einsum("nij,nj->ni", pred["intrinsics_F33"][f].astype(np.float64), cam)
    np.testing.assert_allclose(cam[:, 2], pred["depth_FHW"][f, v, u], rtol=1e-4)
    np.testing.assert_allclose(pix[:, 0] / pix[:, 2], u, atol=1e-2)
    np.testing.assert_allclose(pix[:, 1] / pix[:, 2], v, atol=1e-2)


def test_geometry_backend_maps_cameras_back_to_the_input_size(toy_geometry):
    images = _frames(2, 756, 1036, seed=2)  # twice the network size: resized down, mapped back up
    pred = toy_geometry.predict(images)
    small = resize_frames(images, (378, 518))
    with torch.inference_mode():
        out = toy_geometry.net(torch.from_numpy(small).float()[None] / 255)
    _, k_small = pose_encoding_to_cameras(out["pose_enc"][0].numpy(), (378, 518))
    np.testing.assert_allclose(pred["intrinsics_F33"][:, 0, 0], 2 * k_small[:, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(pred["intrinsics_F33"][:, 1, 2], (k_small[:, 1, 2] + 0.5) * 2 - 0.5, rtol=1e-5)
    # bilinear upsampling keeps the depth field: each 2x2 block averages close to its source pixel
    depth_small = out["depth"][0, ..., 0].numpy()
    blocks = pred["depth_FHW"].reshape(2, 378, 2, 518, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(blocks[:, 1:-1, 1:-1], depth_small[:, 1:-1, 1:-1], rtol=0.05)


def test_geometry_backend_rejects_bad_frames(toy_geometry):
    with pytest.raises(ValueError, match="uint8"):
        toy_geometry.predict(np.zeros((2, 28, 28, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        toy_geometry.predict(np.zeros((28, 28, 3), dtype=np.uint8))


def test_rescale_intrinsics_maps_pixel_centres():
    k = np.array([[[100.0, 0, 259.0], [0, 100.0, 189.0], [0, 0, 1]]], dtype=np.float32)
    out = rescale_intrinsics(k, (378, 518), (756, 1036))
    # pixel centre 10 at the small size covers big pixels 20 and 21: its centre is 20.5
    assert out[0, 0, 0] == 200 and out[0, 1, 1] == 200
    assert out[0, 0, 2] == pytest.approx((259.0 + 0.5) * 2 - 0.5)


def test_estimate_scale_is_a_robust_median_ratio():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 3.0, (2, 20, 30)).astype(np.float32)
    sensor = 2.5 * pred
    sensor[:, :3] *= 10  # 15% outliers
    sensor[0, 10:, :] = 0  # sensor holes
    pred[1, 0, 0] = np.nan
    assert estimate_scale(pred, sensor) == pytest.approx(2.5, rel=1e-6)
    valid = np.zeros(pred.shape, dtype=bool)
    valid[:, :3] = True
    assert estimate_scale(pred, sensor, valid) == pytest.approx(25.0, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        estimate_scale(pred, sensor[:, :10])
    with pytest.raises(ValueError, match="no pixel"):
        estimate_scale(pred, np.zeros_like(sensor))
