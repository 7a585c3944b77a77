"""Identifier renaming during training: the same objects, new names, in scene tokens and text alike."""

import random

import numpy as np

from trainer.loader import permute_identifiers
from trainer.objects import object_ids_in_text
from trainer.stages import Example


def _scene():
    ident = np.array([0, 0, 1, 2, 2, 2, -1, 3], dtype=np.int64)
    examples = [Example("s", "object_name", "What is <OBJ001>?", "chair"),
                Example("s", "grounding", "Find the table.", "<OBJ002>"),
                Example("s", "distance", "How far is <OBJ003> from <OBJ000>?", "1.5")]
    return examples, {"ident": ident, "xyz": np.zeros((8, 3), np.float32)}


def test_renaming_keeps_every_reference_on_the_same_tokens():
    examples, inputs = _scene()
    for seed in range(20):
        renamed = permute_identifiers(examples, inputs, 64, random.Random(seed))
        new_ident = renamed[0][1]["ident"]
        assert (new_ident[inputs["ident"] < 0] == -1).all()
        # A bijection: distinct objects keep distinct names, within the identifier table.
        for old in range(4):
            names = set(new_ident[inputs["ident"] == old].tolist())
            assert len(names) == 1 and 0 <= names.pop() < 64
        assert len(set(new_ident[new_ident >= 0].tolist())) == 4
        for (old_ex, (new_ex, _)) in zip(examples, renamed):
            old_ids = object_ids_in_text(old_ex.question + old_ex.answer)
            new_ids = object_ids_in_text(new_ex.question + new_ex.answer)
            assert len(old_ids) == len(new_ids)
            for o, n in zip(old_ids, new_ids):
                np.testing.assert_array_equal(inputs["ident"] == o, new_ident == n)
            assert new_ex.answer == old_ex.answer or object_ids_in_text(new_ex.answer)


def test_renaming_is_seeded_and_varies_between_seeds():
    examples, inputs = _scene()
    a = permute_identifiers(examples, inputs, 64, random.Random(1))
    b = permute_identifiers(examples, inputs, 64, random.Random(1))
    c = permute_identifiers(examples, inputs, 64, random.Random(2))
    np.testing.assert_array_equal(a[0][1]["ident"], b[0][1]["ident"])
    assert [e.question for e, _ in a] == [e.question for e, _ in b]
    assert not np.array_equal(a[0][1]["ident"], c[0][1]["ident"])
