"""VGGT's official image preprocessing, reproduced bit for bit with Pillow (uint8 in, uint8 out).

`preprocess_images` matches the official `load_and_preprocess_images(paths, mode)`; its float
tensor is exactly our uint8 / 255. `fit_size` is the sizing our geometry backend uses instead
(long side 518, nothing cropped or padded) so every pixel can be mapped back to the input frame.
Legend: N images, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

TARGET = 518
PATCH = 14
WHITE = 255


def target_size(width: int, height: int, mode: str = "crop") -> tuple[int, int]:
    """(new_w, new_h) before any crop or pad; Python's round() (ties to even) as upstream."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    if mode == "pad" and height > width:
        return round(width * (TARGET / height) / PATCH) * PATCH, TARGET
    return TARGET, round(height * (TARGET / width) / PATCH) * PATCH


def fit_size(height: int, width: int, long_side: int = TARGET) -> tuple[int, int]:
    """(new_h, new_w): long side `long_side`, the other rounded to a multiple of the patch size."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} is empty")
    if width >= height:
        return max(PATCH, round(height * (long_side / width) / PATCH) * PATCH), long_side
    return long_side, max(PATCH, round(width * (long_side / height) / PATCH) * PATCH)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGBA is composited on white first; every other mode goes straight to RGB."""
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (WHITE, WHITE, WHITE, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("RGB")


def _pad_to(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    dh, dw = height - chw.shape[1], width - chw.shape[2]
    pads = ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2))
    return np.pad(chw, pads, constant_values=WHITE)


def preprocess_one(image: Image.Image, mode: str = "crop") -> np.ndarray:
    """One image -> uint8 [3, H, W] as upstream (before the mixed-shape padding)."""
    image = to_rgb(image)
    new_w, new_h = target_size(image.width, image.height, mode)
    chw = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    if mode == "crop" and new_h > TARGET:
        top = (new_h - TARGET) // 2
        chw = chw[:, top:top + TARGET]
    if mode == "pad":
        chw = _pad_to(chw, TARGET, TARGET)
    return np.ascontiguousarray(chw)


def preprocess_images(images: Sequence[str | Path | Image.Image], mode: str = "crop") -> np.ndarray:
    """Upstream `load_and_preprocess_images` as uint8 [N, 3, H, W] (float = uint8 / 255 exactly)."""
    if not images:
        raise ValueError("no images to preprocess")
    arrays = []
    for item in images:
        if isinstance(item, Image.Image):
            arrays.append(preprocess_one(item, mode))
            continue
        try:
            with Image.open(item) as image:
                image.load()
                arrays.append(preprocess_one(image, mode))
        except OSError as err:
            raise ValueError(f"cannot read image {item}: {err}") from err
    height = max(a.shape[1] for a in arrays)
    width = max(a.shape[2] for a in arrays)
    return np.stack([_pad_to(a, height, width) for a in arrays])


def resize_frames(images_NHW3: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 frames resized with Pillow bicubic, as upstream does, to uint8 [N, 3, h, w]."""
    out = [
        np.asarray(to_rgb(Image.fromarray(frame)).resize(size_hw[::-1], Image.Resampling.BICUBIC))
        for frame in images_NHW3
    ]
    return np.stack(out).transpose(0, 3, 1, 2).copy()
