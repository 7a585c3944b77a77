"""Typed configuration of our VGGT implementation.

The field names follow the constructor arguments of the official modules (facebookresearch/vggt),
so a config JSON from the reference bundle (`config_A.json`) and the one `save_vggt` writes read
the same way. Torch-free on purpose: the loader and the CLI read configs without building models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# DINOv2 factories VGGT can use as patch embedders: name -> (width, heads, blocks in the factory).
# Every DINOv2 size has 64-wide heads; the block count is overridden by the checkpoint when known.
DINOV2_FACTORIES: dict[str, tuple[int, int, int]] = {
    "dinov2_vits14_reg": (384, 6, 12),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 16, 24),
    "dinov2_vitg2_reg": (1536, 24, 40),
}
PATCH_EMBEDS = ("conv", *DINOV2_FACTORIES)
POINT_HEAD_DEFAULTS = {"output_dim": 4, "activation": "inv_log"}


@dataclass(frozen=True)
class AggregatorConfig:
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    img_size: int = 518  # fixes the DINOv2 pos_embed grid (img_size / patch_size squared)
    num_register_tokens: int = 4
    rope_freq: float = 100.0
    qk_norm: bool = True
    patch_embed: str = "dinov2_vitl14_reg"
    dino_depth: int | None = None  # None: the factory's block count

    def __post_init__(self) -> None:
        if self.patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"aggregator.patch_embed: {self.patch_embed!r} not in {PATCH_EMBEDS}")
        if self.embed_dim % self.num_heads:
            raise ValueError("aggregator.embed_dim must be divisible by aggregator.num_heads")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError("aggregator head dim must be divisible by 4 (2D RoPE halves)")
        if self.patch_embed != "conv" and DINOV2_FACTORIES[self.patch_embed][0] != self.embed_dim:
            raise ValueError(
                f"aggregator.embed_dim {self.embed_dim} does not match {self.patch_embed} "
                f"(width {DINOV2_FACTORIES[self.patch_embed][0]})"
            )

    @property
    def dino_num_blocks(self) -> int:
        return self.dino_depth if self.dino_depth is not None else DINOV2_FACTORIES[self.patch_embed][2]

    @property
    def dino_num_heads(self) -> int:
        return DINOV2_FACTORIES[self.patch_embed][1]


@dataclass(frozen=True)
class CameraHeadConfig:
    dim_in: int = 2048
    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_iterations: int = 4

    def __post_init__(self) -> None:
        if self.dim_in % self.num_heads:
            raise ValueError("camera_head.dim_in must be divisible by camera_head.num_heads")


@dataclass(frozen=True)
class DPTHeadConfig:
    dim_in: int = 2048
    output_dim: int = 2
    activation: str = "exp"  # "exp" (depth) or "inv_log" (points)
    features: int = 256
    out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23)
    patch_size: int = 14
    head_features_2: int = 32
    frames_chunk_size: int = 8

    def __post_init__(self) -> None:
        if self.activation not in ("exp", "inv_log"):
            raise ValueError(f"dpt activation {self.activation!r} must be 'exp' or 'inv_log'")
        if len(self.out_channels) != 4 or len(self.intermediate_layer_idx) != 4:
            raise ValueError("dpt out_channels and intermediate_layer_idx need exactly 4 entries")
        if any(c % 4 for c in (*self.out_channels, self.features // 2)):
            raise ValueError("dpt channel counts must be divisible by 4 (UV positional embedding)")


@dataclass(frozen=True)
class VGGTConfig:
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    camera_head: CameraHeadConfig = field(default_factory=CameraHeadConfig)
    depth_head: DPTHeadConfig = field(default_factory=DPTHeadConfig)
    point_head: DPTHeadConfig = field(
        default_factory=lambda: DPTHeadConfig(output_dim=4, activation="inv_log")
    )

    def __post_init__(self) -> None:
        width = 2 * self.aggregator.embed_dim
        for name in ("camera_head", "depth_head", "point_head"):
            if getattr(self, name).dim_in != width:
                raise ValueError(f"{name}.dim_in must be 2 * aggregator.embed_dim = {width}")
        for name in ("depth_head", "point_head"):
            depth = self.aggregator.depth
            bad = [i for i in getattr(self, name).intermediate_layer_idx if not 0 <= i < depth]
            if bad:
                raise ValueError(f"{name}.intermediate_layer_idx {bad} outside 0..{depth - 1}")

    @classmethod
    def vggt_1b(cls) -> VGGTConfig:
        """The default `VGGT()` of the official code, i.e. `facebook/VGGT-1B`."""
        return cls()

    @classmethod
    def tiny(cls, embed_dim: int = 64, depth: int = 4, num_heads: int = 4) -> VGGTConfig:
        """A random-weight toy size (conv patch embed) for tests and toy workflows."""
        width = 2 * embed_dim
        layers = (0, depth // 3, (2 * depth) // 3, depth - 1)
        dpt = DPTHeadConfig(dim_in=width, features=32, out_channels=(16, 24, 32, 32),
                            intermediate_layer_idx=layers)
        return cls(
            aggregator=AggregatorConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                        patch_embed="conv"),
            camera_head=CameraHeadConfig(dim_in=width, trunk_depth=1, num_heads=num_heads),
            depth_head=dpt,
            point_head=replace(dpt, output_dim=4, activation="inv_log"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "vggt", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VGGTConfig:
        """Reads our own `config.json` or a reference-bundle config (extra keys are ignored)."""
        def pick(section_cls: type, section: dict[str, Any] | None) -> Any:
            section = dict(section or {})
            names = set(section_cls.__dataclass_fields__)
            kept = {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items() if k in names}
            return section_cls(**kept)

        if "aggregator" not in data:
            raise ValueError("VGGT config has no 'aggregator' section")
        aggregator = pick(AggregatorConfig, data.get("aggregator"))
        dino = data.get("dinov2_patch_embed")
        if dino and aggregator.dino_depth is None and "num_blocks_kept" in dino:
            aggregator = replace(aggregator, dino_depth=int(dino["num_blocks_kept"]))
        iterations = (data.get("camera_head") or {}).get("forward_num_iterations")
        camera = pick(CameraHeadConfig, data.get("camera_head"))
        if iterations is not None:
            camera = replace(camera, num_iterations=int(iterations))
        return cls(
            aggregator=aggregator,
            camera_head=camera,
            depth_head=pick(DPTHeadConfig, data.get("depth_head")),
            point_head=pick(DPTHeadConfig, data.get("point_head") or POINT_HEAD_DEFAULTS),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> VGGTConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read VGGT config {path}: {err}") from err
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad VGGT config {path}: {err}") from err
