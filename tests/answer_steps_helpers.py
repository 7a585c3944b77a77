"""Reading a distance answered in steps back into numbers, for the tests of answer_in_steps."""

from __future__ import annotations

import re

# "trash can 0.3 2.6 0.2, <OBJ004> 1.5 1.1 0.4, 4.6 3.8: 1.3"
_DISTANCE_STEPS_RE = re.compile(r"(?P<a>.+?) (?P<ax>\S+) (?P<ay>\S+) (?P<az>\S+), (?P<b>.+?) (?P<bx>\S+) (?P<by>\S+) "
                                r"(?P<bz>\S+), (?P<u>\S+) (?P<v>\S+): (?P<d>\S+)")


def read_distance_steps(text: str) -> dict:
    """{"names": (a, b), "a": (x, y, z), "b": (x, y, z), "offsets": (u, v), "distance": d} of a
    distance answered in steps; AssertionError for any other text."""
    m = _DISTANCE_STEPS_RE.fullmatch(text)
    assert m is not None, f"not a distance in steps: {text!r}"
    num = lambda *keys: tuple(float(m[k]) for k in keys)  # noqa: E731
    return {"names": (m["a"], m["b"]), "a": num("ax", "ay", "az"), "b": num("bx", "by", "bz"),
            "offsets": num("u", "v"), "distance": float(m["d"])}
