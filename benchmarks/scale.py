"""Real scale, rehearsed: the real architectures (random weights) through features -> cluster -> train.

    python benchmarks/scale.py                    # CPU: meta-device table + real widths at reduced size
    python benchmarks/scale.py --preset gpu       # one GPU: the full ScanNet-size rehearsal (make bench-gpu)
    python benchmarks/scale.py --rehearsal        # gpu when CUDA is there, else its CPU fallback (tiny)

1. Every real architecture built on the meta device: parameter counts beside the model cards.
2. One toy scene rendered, exported in ScanNet's format (pipeline/sources/scannet_export.py) and read
   back through the ScanNet source; the three networks (`random:` ids, pipeline/models/real_configs.py)
   load through the workflow's loaders and run one by one (seconds, peak memory), then the whole
   feature stage on the scene, then clustering to the proxy budget (FAISS, on the GPU when it has one).
3. Training steps of the Proxy3D model (DeepSpeed ZeRO-3, gradient checkpointing) on the proxies and
   on the scene's full patch sequence, same language model, each in its own process (clean peaks),
   beside `p3d plan`'s prediction for the same step.

Presets: `gpu` is the paper's setting (32 frames at 448 x 588, Qwen2.5-VL-7B, VGGT-1B, SAM 2.1
hiera-large, 700 proxies, bf16); `cpu` keeps the real widths with fewer layers and frames; `tiny` is
the toy models (the CPU fallback of `make bench-gpu`, and the suite's test). Results go to
benchmarks/results/scale-<preset>-<device>.json and .md, named after the device that produced them.
Peak memory: `torch.cuda.max_memory_allocated` per step on a GPU (each network also alone, warm); on
CPU the process's peak RSS (the features: the whole stage's; the training steps: growth from before
the model is built, so weights, states and activations).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import (bench_batch, bench_model, current_rss_mb, make_train_step,  # noqa: E402
                                reset_rss_peak, rss_peak_mb, step_seconds)
from benchmarks._common import run_child as _run_child  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results"
STAGE3_TRAINABLE = ["projector", "position", "language_model"]  # workflows/scannet.yaml, stage 3

PRESETS = {
    "gpu": dict(lm="random:qwen2_5_vl_7b", vggt="random:vggt_1b", sam2="random:sam2.1_hiera_large",
                frames=32, image=(448, 588), render=(480, 640), proxies=700, points_per_side=32, steps=3,
                dtype="bfloat16"),
    "cpu": dict(lm="random:qwen2_5_vl_3b@layers=1,vision_depth=2,vocab=8192",
                vggt="random:vggt_1b@depth=2,dino_depth=2,camera_depth=1",
                sam2="random:sam2.1_hiera_large@image_size=256,depth=4", frames=4, image=(224, 308), render=(240, 320),
                proxies=64, points_per_side=4, steps=1, dtype="float32"),
    "tiny": dict(lm="toy:qwen2_5_vl", vggt="tiny", sam2="toy:sam2", frames=4, image=(112, 140),
                 render=(120, 160), proxies=32, points_per_side=2, steps=1, dtype="float32"),
}


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "CPU")
    return f"{model}, {os.cpu_count()} cores"


class Meter:
    """Seconds and peak memory of one block (see the module docstring for what peak means)."""

    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device == "cuda"

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self.peak_mb = (self.torch.cuda.max_memory_allocated() / 2**20) if self.cuda else rss_peak_mb()


# ------------------------------------------------------------------ 1. meta device
def meta_table() -> list[dict]:
    from pipeline.models import real_configs as rc

    rows = []
    for name, hub in rc.HUB_IDS.items():
        model = rc.build_on_meta(name)
        card, covers = rc.CARD_PARAMS[name]
        count = rc.num_params(model)
        if name == "vggt_1b":
            count_card = count + 65_941_396  # the track head p3d does not build (reference/vggt/ARCHITECTURE.md)
        elif name == "sam2.1_hiera_large":
            import torch
            from transformers import Sam2VideoModel

            with torch.device("meta"):
                count_card = rc.num_params(Sam2VideoModel(rc.sam2_config(video=True)))
        else:
            count_card = count
        rows.append({"model": hub, "params_built": count, "params_as_card_counts": count_card, "card": card,
                     "card_covers": covers, "matches": abs(count_card - card) <= 0.005 * card})
    return rows


# ------------------------------------------------------------------ 2. scene and features
def make_scene(work: Path, frames: int, render_hw: tuple[int, int]):
    """One toy scene rendered at `render_hw`, exported as a ScanNet scene, read back by the ScanNet source."""
    from pipeline.sources.scannet import ScanNetSource
    from pipeline.sources.scannet_export import export_scannet_scene
    from pipeline.toy.source import ToySource
    from pipeline.toy.world import build_toy_world
    from schemas.workflow import ToyWorldConfig

    data = work / "data"
    build_toy_world(data, data / "toy_scenes", ToyWorldConfig(num_scenes=1, frames=frames, seed=5,
                                                              image_size=render_hw),
                    progress=lambda _: None, workers=1)
    toy = ToySource(path=str(data / "toy_scenes"), num_frames=frames)
    scene_id = toy.available()[0]
    export_scannet_scene(toy.load_scene(scene_id), work / "scans", np.eye(4))
    return ScanNetSource(path=str(work / "scans"), num_frames=frames).load_scene(scene_id)


def _tiny_vggt(work: Path) -> str:
    from pipeline.models.vggt.config import VGGTConfig
    from pipeline.models.vggt.loader import random_vggt, save_vggt

    return str(save_vggt(random_vggt(VGGTConfig.tiny(embed_dim=32, depth=2, num_heads=2), seed=3),
                         work / "vggt_tiny", toy=True))


def features_config(p: dict, vggt: str, on_gpu: bool):
    from schemas.config_features import EncoderConfig, FeaturesConfig, GeometryConfig, SegmenterConfig

    dtype = p["dtype"] if on_gpu else "float32"
    return FeaturesConfig(
        num_frames=p["frames"], image_size=p["image"],
        encoder=EncoderConfig(model=p["lm"], dtype=dtype),
        geometry=GeometryConfig(kind="vggt", model=vggt, dtype=dtype),
        segmenter=SegmenterConfig(kind="sam2", model=p["sam2"], points_per_side=p["points_per_side"],
                                  pred_iou_thresh=0.0, stability_thresh=0.0, min_mask_area=0.0))


def run_features(scene, cfg, data_root: Path, device: str) -> tuple[list[dict], dict]:
    """Build/load the three networks, run the feature stage once (its own per-step seconds); on a GPU
    then each network alone once more, warm, for its own peak memory."""
    from pipeline.features.stage import load_models, prepare_frames, process_scene

    rows = []
    with Meter(device) as m:
        models = load_models(cfg, data_root, device)
    rows.append({"step": "build + load the three networks", "seconds": m.seconds, "peak_mb": m.peak_mb})
    with Meter(device) as whole:
        result = process_scene(scene, models, cfg)
    names = {"encoder": f"encoder ({cfg.encoder.model})", "geometry": f"geometry ({cfg.geometry.model})",
             "segmenter": f"segmenter ({cfg.segmenter.model}, {cfg.segmenter.points_per_side}^2 prompts)"}
    for key, seconds in result.seconds.items():
        rows.append({"step": names.get(key, key), "seconds": seconds, "peak_mb": None})
    rows.append({"step": "feature stage, whole scene", "seconds": whole.seconds, "peak_mb": whole.peak_mb})
    if device == "cuda":
        images, sensor, _ = prepare_frames(scene, cfg)
        with Meter(device) as m:
            models.encoder.encode(images)
        rows.append({"step": f"{names['encoder']}, warm, alone", "seconds": m.seconds, "peak_mb": m.peak_mb})
        with Meter(device) as m:
            geo = models.geometry.predict(images, sensor)
        rows.append({"step": f"{names['geometry']}, warm, alone", "seconds": m.seconds, "peak_mb": m.peak_mb})
        with Meter(device) as m:
            models.segmenter.segment(images, sensor, geo.xyz_FHW3)
        rows.append({"step": f"{names['segmenter']}, warm, alone", "seconds": m.seconds, "peak_mb": m.peak_mb})
    del models
    return rows, result.arrays


def run_cluster(arrays: dict, proxies: int, device: str) -> tuple[dict, object]:
    from pipeline.cluster.core import cluster_scene
    from pipeline.cluster.sampling import faiss_device

    with Meter(device) as m:
        out = cluster_scene(arrays["feat"], arrays["xyz"], arrays["label"], budget=proxies)
    return {"step": f"cluster to {proxies} proxies (FAISS on {faiss_device()})", "seconds": m.seconds,
            "peak_mb": m.peak_mb}, out


# ------------------------------------------------------------------ 3. training steps (child processes)
def train_child(spec: dict) -> dict:
    """One configuration's steps in this process: Proxy3D on the given LM folder, DeepSpeed or torch."""
    from trainer import env

    env.setup_environment()
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration  # noqa: F401  (its code is not model memory)

    data = np.load(spec["scene"], allow_pickle=False)
    feat, xyz = data["feat"], data["xyz"]
    on_gpu = torch.cuda.is_available()
    reset_rss_peak()
    rss0 = current_rss_mb()
    model = bench_model(spec["model"], int(feat.shape[1]))
    params = model.set_trainable(spec["trainable"])
    # Counted before ZeRO-3 partitions them (a partitioned parameter has numel 0).
    counts = {"trainable_params": int(sum(p.numel() for p in params)),
              "total_params": int(sum(p.numel() for p in model.parameters()))}
    model.lm.config.use_cache = False
    if spec["checkpointing"]:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = bench_batch(model, feat, xyz, 1)
    step = make_train_step(model, params, batch, spec["engine"], 1, on_gpu)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times = step_seconds(step, spec["steps"], on_gpu)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else rss_peak_mb() - rss0
    return {"seq_len": int(batch["input_ids"].shape[1]), "step_s": float(np.median(times)), "peak_mb": peak,
            **counts}


def run_child(spec: dict) -> dict:
    return _run_child(__file__, spec, omp_threads=str(min(8, os.cpu_count() or 1)), cwd=ROOT)


def choose_trainable(model_folder: str, feat_dim: int, device: str) -> tuple[list[str], str]:
    """Stage 3's recipe when `p3d plan` says ZeRO-3 fits this GPU, else LoRA (and why)."""
    if device != "cuda":
        return STAGE3_TRAINABLE, "stage 3 recipe"
    import torch

    from p3d import plan

    lm = plan._meta_qwen(model_folder, ".")
    gib = torch.cuda.get_device_properties(0).total_memory / plan.GIB
    full, total, largest = plan.trainable_split(lm, STAGE3_TRAINABLE, feat_dim, 8, 64, 16)
    lora, _, _ = plan.trainable_split(lm, ["projector", "position", "lora"], feat_dim, 8, 64, 16)
    zero3 = plan.train_options(full, total, largest, 1, 0, lora)[1]
    if zero3.gpu_bytes <= gib * plan.GIB:
        return STAGE3_TRAINABLE, f"stage 3 recipe (plan: ZeRO-3 states {zero3.model_state_bytes / plan.GIB:.0f} GiB)"
    return ["projector", "position", "lora"], (f"LoRA: plan says full ZeRO-3 needs "
                                              f"{zero3.gpu_bytes / plan.GIB:.0f} GiB > {gib:.0f} GiB on one GPU")


def predicted_mb(result: dict, lm_folder: str, seq_len: int, device: str) -> float:
    """`p3d plan`'s figure for the measured step: mixed-precision ZeRO-3 on a GPU, fp32 torch state on CPU."""
    from p3d import plan

    lm = plan._meta_qwen(lm_folder, ".")
    trainable, total = result["trainable_params"], result["total_params"]
    bytes_per = 2 if device == "cuda" else 4
    act = plan.activation_bytes(lm.config.text_config, seq_len, 1, True, lm.config.text_config.vocab_size,
                                param_bytes=bytes_per)
    if device == "cuda":
        largest = max(p.numel() for p in lm.parameters())
        return plan.train_options(trainable, total, largest, 1, act, trainable)[1].gpu_bytes / 2**20 \
            - plan.OVERHEAD_BYTES / 2**20
    config = json.loads((Path(lm_folder) / "config.json").read_text())
    stored = plan.DTYPE_BYTES.get(config.get("dtype") or config.get("torch_dtype") or "float32", 4)
    return plan.cpu_fp32_training_bytes(trainable, total, act, stored_bytes=stored) / 2**20


def run_training(arrays: dict, proxies_out, p: dict, lm_folder: str, work: Path, device: str) -> list[dict]:
    patches_feat = arrays["feat"].reshape(-1, arrays["feat"].shape[-1])
    patches_xyz = np.nan_to_num(arrays["xyz"].reshape(-1, 3)).astype(np.float32)
    trainable, why = choose_trainable(lm_folder, int(patches_feat.shape[1]), device)
    rows = []
    for name, feat, xyz in (("proxies", proxies_out.feat_KD, proxies_out.xyz_K3),
                            ("all patches", patches_feat, patches_xyz)):
        path = work / f"scene_{name.replace(' ', '_')}.npz"
        np.savez(path, feat=np.asarray(feat, np.float16), xyz=np.asarray(xyz, np.float32))
        spec = {"model": lm_folder, "scene": str(path), "trainable": trainable, "engine": "zero3",
                "checkpointing": True, "steps": p["steps"]}
        r = run_child(spec)
        r["predicted_mb"] = predicted_mb(r, lm_folder, r["seq_len"], device)
        rows.append({"step": f"train step, {name} ({len(feat)} vision tokens), ZeRO-3 + checkpointing",
                     "trainable": why, "tokens": len(feat), **r, "seconds": r["step_s"]})
    return rows


# ------------------------------------------------------------------ report
def write_results(report: dict, out_dir: Path) -> tuple[Path, Path]:
    from schemas.io import atomic_open

    slug = "".join(c if c.isalnum() else "-" for c in report["device"]).strip("-").lower()[:60]
    stem = out_dir / f"scale-{report['preset']}-{slug}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(stem.with_suffix(".json")) as f:
        f.write(json.dumps(report, indent=2))
    with atomic_open(stem.with_suffix(".md")) as f:
        f.write("\n".join(markdown(report)) + "\n")
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def markdown(report: dict) -> list[str]:
    lines = [f"# Scale rehearsal, preset `{report['preset']}`", "",
             f"Device: **{report['device']}**. {report['note']}", "",
             "| model | parameters built | as the card counts | card | match |", "|---|---:|---:|---:|---|"]
    for r in report["meta"]:
        lines.append(f"| {r['model']} | {r['params_built']:,} | {r['params_as_card_counts']:,} | "
                     f"{r['card'] / 1e9:.3g}B ({r['card_covers']}) | {'yes' if r['matches'] else 'NO'} |")
    lines += ["", f"Scene: {report['scene']}", "", "| step | seconds | peak MB | tokens/sample | plan MB |",
              "|---|---:|---:|---:|---:|"]
    for r in report["steps"]:
        tokens = r.get("seq_len", "")
        plan = f"{r['predicted_mb']:.0f}" if "predicted_mb" in r else ""
        peak = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['step']} | {r['seconds']:.3f} | {peak} | {tokens} | {plan} |")
    train = [r for r in report["steps"] if "seq_len" in r]
    if len(train) == 2:
        prox, full = train
        lines += ["", f"Trainable: {prox['trainable']}. All patches / proxies: step time "
                      f"{full['seconds'] / prox['seconds']:.2f}x, peak memory "
                      f"{full['peak_mb'] / prox['peak_mb']:.2f}x, sequence {full['seq_len'] / prox['seq_len']:.1f}x "
                      "(the goal: >= 8x time and memory)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--rehearsal", action="store_true", help="`gpu` with CUDA, else the `tiny` CPU fallback")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--work", type=Path, help="scratch folder (models, scene); default: a temporary one")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_child(json.loads(args.child))))
        return
    import torch

    on_gpu = torch.cuda.is_available()
    preset = ("gpu" if on_gpu else "tiny") if args.rehearsal else args.preset
    note = "" if on_gpu or preset != "tiny" or not args.rehearsal else \
        "No GPU found: this is the CPU fallback of `make bench-gpu` at tiny sizes, not the GPU rehearsal."
    if preset == "gpu" and not on_gpu:
        raise SystemExit("error: --preset gpu needs a CUDA device (use --rehearsal for the CPU fallback)")
    if note:
        print(note)
    device = "cuda" if on_gpu else "cpu"
    p = PRESETS[preset]
    work = args.work or Path(tempfile.mkdtemp(prefix="p3d-scale-"))
    report = {"preset": preset, "device": device_name(device), "note": note, "settings": p,
              "torch": torch.__version__}
    t0 = time.perf_counter()
    report["meta"] = meta_table()
    scene = make_scene(work, max(p["frames"], 8), tuple(p["render"]))
    report["scene"] = (f"toy scene {scene.scene_id} rendered at {p['render'][0]}x{p['render'][1]}, exported as "
                       f"ScanNet, {p['frames']} frames at {p['image'][0]}x{p['image'][1]} "
                       f"({p['frames'] * (p['image'][0] // 28) * (p['image'][1] // 28)} patch tokens)")
    vggt = _tiny_vggt(work) if p["vggt"] == "tiny" else p["vggt"]
    cfg = features_config(p, vggt, on_gpu)
    data_root = work / "data"
    steps, arrays = run_features(scene, cfg, data_root, device)
    cluster_row, proxies_out = run_cluster(arrays, p["proxies"], device)
    steps.append(cluster_row)
    from pipeline.models.resolve import resolve_model

    steps += run_training(arrays, proxies_out, p, resolve_model(p["lm"], data_root), work, device)
    report["steps"] = steps
    report["total_seconds"] = time.perf_counter() - t0
    json_path, md_path = write_results(report, args.out)
    print("\n".join(markdown(report)))
    print(f"\n{report['total_seconds']:.0f} s in all; wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
