"""Object categories of the toy world: each one a recognisable shape made of boxes, with its own
size range and colour palette.

A shape is built in a local frame whose footprint is [0, w] x [0, d] and height [0, h] (z up); the
"front" of an object faces -y in that frame. Parts carry a shade factor so legs, frames and shades
read differently from the main surface once rendered.
Legend: P parts; every part is (lo_3, hi_3, shade).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Part = tuple[np.ndarray, np.ndarray, float]


def _part(lo, hi, shade: float = 1.0) -> Part:
    return np.asarray(lo, float), np.asarray(hi, float), shade


def _legs(w: float, d: float, top_z: float, t: float = 0.05, shade: float = 0.6) -> list[Part]:
    corners = [(0, 0), (w - t, 0), (0, d - t), (w - t, d - t)]
    return [_part((x, y, 0), (x + t, y + t, top_z), shade) for x, y in corners]


def _chair(w, d, h):
    seat = 0.45
    return [
        *_legs(w, d, seat - 0.05, 0.04),
        _part((0, 0, seat - 0.05), (w, d, seat)),
        _part((0, d - 0.06, seat), (w, d, h), 0.9),
    ]


def _table(w, d, h):
    return [*_legs(w, d, h - 0.05, 0.06), _part((0, 0, h - 0.05), (w, d, h))]


def _desk(w, d, h):
    return [
        _part((0, 0, 0), (0.04, d, h - 0.04), 0.7),
        _part((w - 0.04, 0, 0), (w, d, h - 0.04), 0.7),
        _part((0.04, d - 0.03, 0.3), (w - 0.04, d, h - 0.04), 0.75),
        _part((0, 0, h - 0.04), (w, d, h)),
    ]


def _bed(w, d, h):
    return [
        _part((0, 0, 0), (w, d, 0.3), 0.55),
        _part((0.03, 0.08, 0.3), (w - 0.03, d - 0.03, 0.5), 1.15),
        _part((0, 0, 0), (w, 0.08, h), 0.55),
        _part((0.15, 0.12, 0.5), (w - 0.15, 0.45, 0.6), 1.3),
    ]


def _sofa(w, d, h):
    return [
        _part((0, 0, 0), (w, d, 0.42)),
        _part((0, d - 0.22, 0.42), (w, d, h), 0.85),
        _part((0, 0, 0.42), (0.2, d - 0.22, 0.62), 0.9),
        _part((w - 0.2, 0, 0.42), (w, d - 0.22, 0.62), 0.9),
    ]


def _cabinet(w, d, h):
    mid = w / 2
    return [
        _part((0, 0.02, 0.08), (w, d, h)),
        _part((0.02, 0.04, 0), (w - 0.02, d, 0.08), 0.5),
        _part((mid - 0.06, 0, h * 0.55), (mid - 0.03, 0.02, h * 0.75), 0.4),
        _part((mid + 0.03, 0, h * 0.55), (mid + 0.06, 0.02, h * 0.75), 0.4),
    ]


def _bookshelf(w, d, h):
    t = 0.03
    parts = [
        _part((0, 0, 0), (t, d, h)),
        _part((w - t, 0, 0), (w, d, h)),
        _part((t, d - 0.02, 0), (w - t, d, h), 0.7),
    ]
    for z in np.linspace(0, h - t, 5):
        parts.append(_part((t, 0, z), (w - t, d - 0.02, z + t), 1.1))
    return parts


def _lamp(w, d, h):
    c = w / 2
    return [
        _part((c - 0.13, c - 0.13, 0), (c + 0.13, c + 0.13, 0.04), 0.5),
        _part((c - 0.02, c - 0.02, 0.04), (c + 0.02, c + 0.02, h - 0.3), 0.5),
        _part((0, 0, h - 0.3), (w, d, h), 1.2),
    ]


def _monitor(w, d, h):
    c = w / 2
    return [
        _part((c - 0.1, 0.02, 0), (c + 0.1, d, 0.02), 0.4),
        _part((c - 0.03, d - 0.06, 0.02), (c + 0.03, d - 0.02, 0.15), 0.4),
        _part((0, d - 0.1, 0.12), (w, d - 0.06, h), 0.35),
        _part((0.02, d - 0.11, 0.14), (w - 0.02, d - 0.1, h - 0.02), 1.0),
    ]


def _trash_can(w, d, h):
    return [_part((0.02, 0.02, 0), (w - 0.02, d - 0.02, h - 0.03)), _part((0, 0, h - 0.03), (w, d, h), 0.7)]


def _nightstand(w, d, h):
    return [
        _part((0, 0.02, 0), (w, d, h - 0.03)),
        _part((0, 0, h - 0.03), (w, d, h), 1.1),
        _part((w / 2 - 0.05, 0, h * 0.6), (w / 2 + 0.05, 0.02, h * 0.66), 0.4),
    ]


def _plant(w, d, h):
    pot = 0.3
    return [
        _part((w / 2 - 0.12, d / 2 - 0.12, 0), (w / 2 + 0.12, d / 2 + 0.12, pot), 1.0),
        _part((0, 0, pot), (w, d, h), 1.0),
    ]


@dataclass(frozen=True)
class Category:
    name: str
    size_lo: tuple[float, float, float]  # w, d, h in metres
    size_hi: tuple[float, float, float]
    build: Callable[[float, float, float], list[Part]]
    palette: tuple[tuple[str, tuple[int, int, int]], ...]
    square: bool = False  # footprint w == d
    on: tuple[str, ...] = ()  # stands on top of one of these categories instead of the floor
    plural: str = ""

    @property
    def plural_name(self) -> str:
        return self.plural or self.name + "s"


# Each category has its own hue family, two named shades of it. Why: the toy encoder is a
# random-weight ViT, which sees colour but cannot recognise shapes the way a pretrained encoder
# does; with shared palettes (three categories in the same woods) the category was barely
# recoverable from the features, so no tiny model could name objects it had not seen
# (measured: docs/RESULTS.md#toy-hue-families). A distinct hue per category stands in for what a real encoder
# recognises; shape and size still vary inside a category, and the two shades keep colour
# words ("the maroon chair") meaningful for grounding.
CATEGORIES: tuple[Category, ...] = (
    Category("chair", (0.42, 0.42, 0.8), (0.55, 0.55, 1.0), _chair,
             (("red", (190, 40, 35)), ("maroon", (125, 30, 40))), square=True),
    Category("table", (0.8, 0.6, 0.7), (1.6, 1.0, 0.78), _table,
             (("brown", (135, 85, 45)), ("tan", (185, 140, 95)))),
    Category("desk", (1.0, 0.5, 0.72), (1.6, 0.7, 0.76), _desk,
             (("white", (235, 235, 230)), ("light gray", (195, 195, 200)))),
    Category("bed", (0.9, 1.9, 0.9), (1.8, 2.1, 1.1), _bed,
             (("pink", (230, 150, 175)), ("rose", (200, 95, 125)))),
    Category("sofa", (1.6, 0.8, 0.75), (2.4, 1.0, 0.9), _sofa,
             (("blue", (50, 80, 165)), ("navy", (30, 40, 95)))),
    Category("cabinet", (0.6, 0.4, 0.8), (1.2, 0.6, 1.2), _cabinet,
             (("orange", (225, 125, 45)), ("rust", (170, 80, 40)))),
    Category("bookshelf", (0.8, 0.3, 1.6), (1.2, 0.4, 2.0), _bookshelf,
             (("black", (35, 35, 38)), ("charcoal", (70, 70, 75))), plural="bookshelves"),
    Category("lamp", (0.35, 0.35, 1.4), (0.45, 0.45, 1.7), _lamp,
             (("yellow", (240, 210, 60)), ("gold", (200, 165, 45))), square=True),
    Category("monitor", (0.5, 0.2, 0.4), (0.7, 0.22, 0.5), _monitor,
             (("silver", (160, 170, 185)), ("steel", (110, 120, 140))), on=("desk", "table")),
    Category("trash can", (0.25, 0.25, 0.3), (0.35, 0.35, 0.45), _trash_can,
             (("teal", (40, 135, 135)), ("cyan", (70, 185, 195))), square=True),
    Category("nightstand", (0.4, 0.4, 0.5), (0.5, 0.45, 0.6), _nightstand,
             (("purple", (125, 60, 155)), ("lilac", (185, 145, 215)))),
    Category("plant", (0.4, 0.4, 0.8), (0.6, 0.6, 1.2), _plant,
             (("green", (45, 145, 55)), ("olive", (115, 135, 45))), square=True),
)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}
CATEGORY_NAMES = [c.name for c in CATEGORIES]


def rotate_parts(parts: list[Part], size_wdh: np.ndarray, quarter_turns: int) -> list[Part]:
    """Rotate parts by quarter turns about z inside the footprint; returns parts in a frame whose
    footprint is [0, w'] x [0, d'] (w, d swapped for odd turns)."""
    out = []
    for lo, hi, shade in parts:
        xy_22 = np.array([[lo[0], lo[1]], [hi[0], hi[1]]])
        w, d = float(size_wdh[0]), float(size_wdh[1])
        for _ in range(quarter_turns % 4):
            # A quarter turn maps (x, y) -> (d - y, x) and swaps the footprint's w and d.
            xy_22 = np.stack([d - xy_22[:, 1], xy_22[:, 0]], axis=1)
            w, d = d, w
        new_lo = np.array([xy_22[:, 0].min(), xy_22[:, 1].min(), lo[2]])
        new_hi = np.array([xy_22[:, 0].max(), xy_22[:, 1].max(), hi[2]])
        out.append((new_lo, new_hi, shade))
    return out
