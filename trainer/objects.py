"""Object referencing (paper 3.2): `<OBJxxx>` tokens, identifier and semantic glyph embeddings.

Identifiers name object instances. The instance segments of a proxy shard (label >= 0), taken in
BFS order (segments.json order), are written `<OBJ000>`, `<OBJ001>`, ...; segments that are no
instance (label -1: unlabeled background such as the toy world's wall and floor cells) get none,
and neither do instances beyond the first M. Why not the BFS position itself: a scene with many
background segments would spread its few objects over sparse, scene-specific numbers, and a small
model then memorizes (scene, number) -> answer (measured: docs/RESULTS.md#dense-identifiers).
Dense names make every identifier
frequent and keep the M tokens for what can be referenced. An identifier's embedding comes from
an image of the drawn number passed through the model's own vision
encoder (`model.model.visual`); a category's semantic embedding from one symbol image per category
(a drawn glyph by default, or `<folder>/<category>.png` when a folder is given).

Why the glyph vectors are centred, whitened and rescaled: a vision tower maps all drawn numbers to
nearly the same direction (cosine ~0.99 on a random tower, still high on a real one), since most of
an image is white background. Removing the shared mean and whitening across the table keeps exactly
what tells one identifier from another; rescaling back to the RMS of the raw encoder outputs keeps
them at the scale of vision tokens, i.e. of the proxy features they are added to (the identifier must
not drown in the feature, nor the other way round).

Legend: M identifiers, C categories, H hidden size, N images, T tokens of one image.
"""

from __future__ import annotations

import colorsys
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

OBJ_TOKEN_RE = re.compile(r"<OBJ(\d{3,})>")
UNKNOWN_CATEGORY = "?"
GLYPH_SIZE = (112, 56)  # W, H: 4 x 2 merged 28 px tokens, room for three digits


def obj_token(index: int) -> str:
    return f"<OBJ{index:03d}>"


def obj_tokens(num: int) -> list[str]:
    return [obj_token(i) for i in range(num)]


def object_ids_in_text(text: str) -> list[int]:
    """Segment ids named by `<OBJxxx>` tokens, in order, without repeats."""
    seen: dict[int, None] = {}
    for m in OBJ_TOKEN_RE.finditer(text):
        seen.setdefault(int(m.group(1)), None)
    return list(seen)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def draw_identifier(index: int):
    """A white image with the number drawn in black (the paper's identifier image)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", GLYPH_SIZE, "white")
    ImageDraw.Draw(img).text((GLYPH_SIZE[0] / 2, GLYPH_SIZE[1] / 2), f"{index:03d}", fill="black",
                             font=_font(40), anchor="mm")
    return img


def draw_category_glyph(category: str):
    """A deterministic symbol for a category: coloured shape chosen by a hash, plus the name's initials."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(category.encode()).digest()
    hue, shape = digest[0] / 255.0, digest[1] % 4
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    img = Image.new("RGB", GLYPH_SIZE, "white")
    draw = ImageDraw.Draw(img)
    box = (4, 4, 52, 52)
    if shape == 0:
        draw.ellipse(box, fill=colour)
    elif shape == 1:
        draw.rectangle(box, fill=colour)
    elif shape == 2:
        draw.polygon([(28, 4), (52, 52), (4, 52)], fill=colour)
    else:
        draw.polygon([(28, 4), (52, 28), (28, 52), (4, 28)], fill=colour)
    draw.text((84, 28), category[:2], fill="black", font=_font(32), anchor="mm")
    return img


def category_images(categories: Sequence[str], folder: str | Path | None = None) -> list:
    """One image per category: `<folder>/<category>.png` when present, else the drawn glyph."""
    from PIL import Image

    images = []
    for cat in categories:
        path = Path(folder) / f"{cat}.png" if folder else None
        images.append(Image.open(path).convert("RGB") if path and path.exists() else draw_category_glyph(cat))
    return images


def encode_images(model, image_processor, images: Sequence, batch_size: int = 64):
    """Mean-pooled vision-encoder embedding (N x H) of each image, through `model.model.visual`."""
    import torch

    out = []
    device = next(model.parameters()).device
    dtype = model.model.visual.dtype if hasattr(model.model.visual, "dtype") else torch.float32
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            inputs = image_processor(images=list(images[i:i + batch_size]), return_tensors="pt")
            feats = model.model.get_image_features(inputs["pixel_values"].to(device, dtype),
                                                   inputs["image_grid_thw"].to(device), return_dict=True)
            out.extend(tok_TH.float().mean(0) for tok_TH in feats.pooler_output)
    return torch.stack(out)


def whiten(vec_NH, eps: float = 1e-2):
    """Centre and ZCA-whiten rows (see module docstring); eps keeps near-empty directions bounded."""
    import torch

    centred = vec_NH - vec_NH.mean(0, keepdim=True)
    cov_HH = centred.T @ centred / max(len(centred), 1)
    evals, evecs = torch.linalg.eigh(cov_HH.double())
    scale = evals.clamp_min(0) + eps * evals.clamp_min(0).max().clamp_min(1e-12)
    w_HH = (evecs @ torch.diag(scale.rsqrt()) @ evecs.T).float()
    return centred @ w_HH


def rescale_rows(vec_NH, target_rms: float):
    rms_N1 = vec_NH.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    return vec_NH / rms_N1 * target_rms


def glyph_table(model, image_processor, images: Sequence):
    """Encode, whiten and rescale a set of glyph images into an N x H table (float32)."""
    raw_NH = encode_images(model, image_processor, images)
    target_rms = float(raw_NH.pow(2).mean().sqrt())
    if len(images) > 2:
        raw_NH = whiten(raw_NH)
    return rescale_rows(raw_NH, target_rms)


def segment_identifiers(segments: Sequence[dict], num_obj_tokens: int) -> dict[int, int]:
    """Segment id -> identifier index, for the segments that get one (module docstring)."""
    out: dict[int, int] = {}
    for seg in sorted(segments, key=lambda s: s["id"]):
        if seg["label"] >= 0 and len(out) < num_obj_tokens:
            out[int(seg["id"])] = len(out)
    return out


def identifier_array(segments: Sequence[dict], num_obj_tokens: int):
    """Identifier of each segment id as an int64 array (-1 where none), for indexing segment.npy."""
    import numpy as np

    size = max((int(s["id"]) for s in segments), default=-1) + 1
    out = np.full(size, -1, np.int64)
    for seg_id, ident in segment_identifiers(segments, num_obj_tokens).items():
        out[seg_id] = ident
    return out


def instances_to_segments(segments: Sequence[dict]) -> dict[int, int]:
    """Ground-truth instance id -> id of the segment matched to it (segments.json `instance_id`,
    pipeline/cluster/matching.py). A segment's `label` is the segmenter's own numbering and is never
    compared with a dataset's object ids; an instance that no segment matched is absent."""
    out: dict[int, int] = {}
    for seg in segments:
        if "instance_id" not in seg:
            raise ValueError(f"segment {seg.get('id')}: no instance_id (proxy shards of format 1; "
                             "re-run `p3d cluster`)")
        if seg["instance_id"] is not None:
            if int(seg["instance_id"]) in out:
                raise ValueError(f"instance {seg['instance_id']} is matched to segments "
                                 f"{out[int(seg['instance_id'])]} and {seg['id']}; matching is one-to-one")
            out[int(seg["instance_id"])] = int(seg["id"])
    return out
