"""The Proxy3D model wrapper on a tiny random-weight Qwen2.5-VL: positions, identifiers, decoding, export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pipeline.toy.models import build_toy_qwen
from trainer.shard_reader import Collator, iter_scenes, scene_inputs
from trainer.model import Proxy3DModel
from trainer.examples import Example, build_examples
from tests.synthetic_shards import CATEGORIES, write_synthetic

NUM_OBJ = 32


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_toy_qwen(tmp_path_factory.mktemp("qwen") / "qwen", ["What is a chair?", "How many lamps?"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn"), num_scenes=4, dim=128)


@pytest.fixture(scope="module")
def model(base):
    torch.manual_seed(0)
    return Proxy3DModel.build(str(base), feat_dim=128, num_obj_tokens=NUM_OBJ, categories=list(CATEGORIES),
                              height_bins=16, height_range=(-0.5, 3.5), fourier_dim=16).eval()


def _scene(data):
    return next(iter_scenes(data[0], shuffle=False))


def _batch(model, scene, question="What is <OBJ001>?", answer="chair", mode="proxy", **kw):
    col = Collator(model.tokenizer, model.cfg, model.category_ids, **kw)
    ex = Example(scene["scene_id"], "object_name", question, answer)
    return col([(ex, scene_inputs(scene, mode, NUM_OBJ))], with_answer=bool(answer))


def test_obj_tokens_are_single_tokens_tied_to_identifiers(model):
    tok = model.tokenizer
    ids = tok("What is <OBJ012>?", add_special_tokens=False)["input_ids"]
    assert model.cfg.obj_token_ids[12] in ids
    assert tok.decode([model.cfg.obj_token_ids[12]]) == "<OBJ012>"
    batch = {"input_ids": torch.tensor([[model.cfg.obj_token_ids[12]]]), "scene_mask": torch.zeros(1, 0, dtype=bool),
             "scene_ident": torch.zeros(1, 0, dtype=torch.long), "scene_sem": torch.zeros(1, 0, dtype=torch.long),
             "scene_xyz": torch.zeros(1, 0, 3)}
    with torch.no_grad():
        emb = model.input_embeddings(batch)[0, 0]
    assert torch.equal(emb, model.identifiers.weight[12])
    # The glyph tables are distinct per identifier (whitened), at the scale of the vision encoder.
    from trainer.objects import draw_identifier, encode_images

    w = model.identifiers.weight.detach()
    cos = torch.nn.functional.cosine_similarity(w[:, None], w[None], dim=-1)
    assert cos.fill_diagonal_(0).abs().max() < 0.9
    raw = encode_images(model.lm, model.image_processor, [draw_identifier(i) for i in range(NUM_OBJ)])
    raw_cos = torch.nn.functional.cosine_similarity(raw[:, None], raw[None], dim=-1).fill_diagonal_(0)
    assert raw_cos.mean() > cos.mean() + 0.3  # whitening is what makes them distinguishable
    assert float(w.pow(2).mean().sqrt()) == pytest.approx(float(raw.pow(2).mean().sqrt()), rel=1e-3)


def test_horizontal_shift_changes_only_fourier_term_vertical_only_rotary_ids(model, data):
    scene = _scene(data)
    moved = dict(scene, xyz=scene["xyz"] + np.array([1.5, -0.7, 0.0], np.float32))
    raised = dict(scene, xyz=scene["xyz"] + np.array([0.0, 0.0, 1.0], np.float32))
    b0, b_moved, b_raised = (_batch(model, s) for s in (scene, moved, raised))
    with torch.no_grad():
        e0, e_moved, e_raised = (model.input_embeddings(b) for b in (b0, b_moved, b_raised))
        f0 = model.fourier(b0["scene_xyz"][..., :2])
        f_moved = model.fourier(b_moved["scene_xyz"][..., :2])
    slots = b0["input_ids"][0] == model.cfg.scene_token_id
    # Horizontal shift: same rotary ids, embeddings differ by exactly the Fourier term.
    assert torch.equal(b0["position_ids"], b_moved["position_ids"])
    assert not torch.allclose(e0[0, slots], e_moved[0, slots])
    torch.testing.assert_close(e_moved[0, slots] - e0[0, slots], (f_moved - f0)[0], atol=1e-5, rtol=1e-4)
    assert torch.equal(e0[0, ~slots], e_moved[0, ~slots])
    # Raising: same embeddings, different rotary ids on the scene tokens only.
    torch.testing.assert_close(e0, e_raised)
    pos0, pos_r = b0["position_ids"][:, 0], b_raised["position_ids"][:, 0]
    assert not torch.equal(pos0[:, slots], pos_r[:, slots])
    assert torch.equal(pos0[:, ~slots], pos_r[:, ~slots])
    # Height is on the height/width rows; the temporal row holds the scene start for all proxies.
    assert torch.equal(pos_r[1, slots], pos_r[2, slots]) and pos_r[0, slots].unique().numel() == 1


def test_identifier_added_to_its_segments_proxies(model, data):
    scene = _scene(data)
    b = _batch(model, scene)
    with torch.no_grad():
        vec = model.scene_vectors(b)[0]
        base_vec = model.projector(b["scene_feat"][0]) + model.fourier(b["scene_xyz"][0, :, :2])
    seg = torch.from_numpy(scene["segment"].astype(np.int64))
    torch.testing.assert_close(vec - base_vec, model.identifiers.weight[seg].detach(), atol=1e-5, rtol=1e-4)


def test_scene_tokens_leave_the_fourier_term_out_until_it_is_on(model, data):
    """cfg.fourier_on (train.fourier_from_stage): off, a scene token is its projected feature plus its
    identifier, whatever its (x, y); on, the Fourier term of its (x, y) comes on top."""
    b = _batch(model, _scene(data))
    with torch.no_grad():
        on = model.scene_vectors(b)[0]
        model.cfg.fourier_on = False
        try:
            off = model.scene_vectors(b)[0]
            moved = dict(b, scene_xyz=b["scene_xyz"] + torch.tensor([1.5, -2.0, 0.0]))
            off_moved = model.scene_vectors(moved)[0]
        finally:
            model.cfg.fourier_on = True
        fourier = model.fourier(b["scene_xyz"][0, :, :2])
    assert float(fourier.abs().max()) > 0
    torch.testing.assert_close(on - off, fourier, atol=1e-5, rtol=1e-4)
    assert torch.equal(off, off_moved)


def test_loss_only_on_response_tokens(model, data):
    b = _batch(model, _scene(data), answer="chair")
    lab = b["labels"][0]
    resp = lab[lab != -100].tolist()
    assert resp == model.tokenizer("chair", add_special_tokens=False)["input_ids"] + [model.cfg.chat_end_id]
    n_scene = int((b["input_ids"][0] == model.cfg.scene_token_id).sum())
    assert n_scene == len(_scene(data)["xyz"])


def test_greedy_generation_with_cache_matches_full_recompute(model, data):
    scenes = list(iter_scenes(data[0], shuffle=False))[:2]
    col = Collator(model.tokenizer, model.cfg, model.category_ids, padding_side="left")
    items = [(Example(s["scene_id"], "qa", q, ""), scene_inputs(s, "proxy", NUM_OBJ))
             for s, q in zip(scenes, ["What is <OBJ001>?", "How many chairs are in the room?"])]
    batch = col(items, with_answer=False)
    fast = model.generate(batch, max_new_tokens=4)
    for b, (ex, inputs) in enumerate(items):  # unbatched, no cache: recompute the whole sequence each step
        single = col([(ex, inputs)], with_answer=False)
        ids, out = single["input_ids"], []
        pos, mask = single["position_ids"], single["attention_mask"]
        for _ in range(len(fast[b])):
            with torch.no_grad():
                logits = model.lm(inputs_embeds=model.input_embeddings(dict(single, input_ids=ids)),
                                  attention_mask=mask, position_ids=pos).logits
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
            pos = torch.cat([pos, pos[:, :, -1:] + 1], 2)
        assert out == fast[b]


def test_sampled_generation_draws_from_the_models_distribution_never_the_scene_slot(model, data):
    """With a generator, `generate` draws each token from softmax(logits) (reference: the full
    forward's logits, sharpened so that a few tokens carry the mass): the top tokens' frequencies over
    2,000 draws lie within 4 sigma of their probabilities; the scene slot, given the top token's
    logit, is never drawn; one seed repeats, another differs."""
    scene = _scene(data)
    col = Collator(model.tokenizer, model.cfg, model.category_ids, padding_side="left")
    item = (Example(scene["scene_id"], "qa", "What is <OBJ001>?", ""), scene_inputs(scene, "proxy", NUM_OBJ))
    single = col([item], with_answer=False)
    head, slot, n = model.lm.lm_head.weight, model.cfg.scene_token_id, 2000

    def next_logits():
        return model.lm(inputs_embeds=model.input_embeddings(single), attention_mask=single["attention_mask"],
                        position_ids=single["position_ids"]).logits[0, -1].float()

    kept = head.detach().clone()
    try:
        with torch.no_grad():
            logits = next_logits()
            # No bias: scaling the head scales the logits; the scale whose top token has ~half the mass.
            scale = min((2.0 ** k for k in range(12)), key=lambda c: abs(float(torch.softmax(c * logits, -1).max()) - 0.5))
            head.mul_(scale)
            head[slot] = head[int(logits.argmax())]
            probs = torch.softmax(next_logits().index_fill(0, torch.tensor([slot]), float("-inf")), -1)
            batch = col([item] * n, with_answer=False)
            drawn = [ids[0] for ids in model.generate(batch, 1, generator=torch.Generator().manual_seed(5))]
            again = [ids[0] for ids in model.generate(batch, 1, generator=torch.Generator().manual_seed(5))]
            other = [ids[0] for ids in model.generate(batch, 1, generator=torch.Generator().manual_seed(6))]
    finally:
        with torch.no_grad():
            head.copy_(kept)
    assert slot not in drawn
    top = torch.topk(probs, 5)
    assert 0.2 < float(top.values[0]) < 0.8 and float(top.values[1]) > 0.02  # a few tokens, not one
    for p, token in zip(top.values.tolist(), top.indices.tolist()):
        freq = drawn.count(token) / n
        assert abs(freq - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-3, (token, freq, p)
    assert drawn == again and drawn != other


def test_answer_only_loss_equals_the_full_vocabulary_loss_and_its_gradients(base, data):
    """`forward` projects only the labelled positions onto the vocabulary; the loss and every gradient
    must equal Hugging Face's own loss over the full logits (reference: `lm(..., labels=)`)."""
    torch.manual_seed(3)
    m = Proxy3DModel.build(str(base), feat_dim=128, num_obj_tokens=NUM_OBJ, categories=list(CATEGORIES),
                           height_bins=16, height_range=(-0.5, 3.5), fourier_dim=16)
    m.set_trainable(["projector", "position", "identifiers", "language_model"])
    scene = _scene(data)
    col = Collator(m.tokenizer, m.cfg, m.category_ids)
    items = [(Example(scene["scene_id"], "object_name", q, a), scene_inputs(scene, "proxy", NUM_OBJ))
             for q, a in [("What is <OBJ001>?", "chair"), ("How many chairs are in the room?", "2 chairs")]]
    b = col(items, with_answer=True)  # two rows, different answer lengths: padding inside the batch
    assert int((b["labels"] != -100).sum()) > 2

    def loss_and_grads(full: bool):
        m.zero_grad()
        if full:
            loss = m.lm(inputs_embeds=m.input_embeddings(b), attention_mask=b["attention_mask"],
                        position_ids=b["position_ids"], labels=b["labels"], use_cache=False).loss
        else:
            loss = m(b).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    ref_loss, ref_grads = loss_and_grads(full=True)
    loss, grads = loss_and_grads(full=False)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    assert m(b).logits.shape[0] == int((b["labels"][:, 1:] != -100).sum())


def test_export_reload_same_outputs_with_lora_merged(model, data, tmp_path, base):
    torch.manual_seed(1)
    m = Proxy3DModel.build(str(base), feat_dim=128, num_obj_tokens=NUM_OBJ, categories=list(CATEGORIES),
                           height_bins=16, height_range=(-0.5, 3.5), fourier_dim=16)
    m.set_trainable(["lora", "projector"], lora_rank=4)
    with torch.no_grad():  # make the adapters non-trivial, as after training
        for n, p in m.named_parameters():
            if "lora_b" in n:
                p.normal_(std=0.05)
    m.eval()
    b = _batch(m, _scene(data))
    with torch.no_grad():
        before = m(b).logits
    folder = m.export(tmp_path / "exported")
    assert (folder / "p3d_config.json").exists() and (folder / "model.safetensors").exists()
    loaded = Proxy3DModel.from_pretrained(folder).eval()
    assert not loaded.lora_enabled
    with torch.no_grad():
        after = loaded(b).logits
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)


def test_stage_builders_name_objects_and_relations(data):
    scene = _scene(data)
    segs = scene["segments"]
    rng = random.Random(0)
    s1 = build_examples(1, scene["scene_id"], segs, [], NUM_OBJ, rng)
    names = {ex.question: ex.answer for ex in s1 if ex.task == "object_name"}
    assert names == {f"What is <OBJ{s['id']:03d}>?": s["category"] for s in segs}
    for ex in s1:
        if ex.task == "object_id":
            cat = ex.question.removeprefix("Which object is the ").rstrip("?")
            assert ex.answer.split() == [f"<OBJ{s['id']:03d}>" for s in segs if s["category"] == cat]
    s2 = build_examples(2, scene["scene_id"], segs, [], NUM_OBJ, rng)
    where = [ex for ex in s2 if ex.task == "object_position"]
    assert len(where) == len(segs)
    s3 = build_examples(3, scene["scene_id"], segs, [], NUM_OBJ, rng)
    for ex in s3:
        if ex.task == "distance":
            a, b = (int(t) for t in __import__("re").findall(r"<OBJ(\d+)>", ex.question))
            d = np.linalg.norm(np.subtract(segs[a]["box"]["center"], segs[b]["box"]["center"]))
            assert float(ex.answer) == pytest.approx(d, abs=0.051)


def test_record_mapping_through_the_matching(data):
    from schemas.record import Record
    from trainer.examples import record_example

    # Labels are the segmenter's numbering; records name ground-truth instances (instance_id).
    segs = [{"id": 0, "label": 7, "instance_id": 3, "match_iou": 0.8, "category": "chair", "box": {}},
            {"id": 1, "label": -1, "instance_id": None, "match_iou": None, "category": None, "box": {}},
            {"id": 2, "label": 3, "instance_id": 9, "match_iou": 0.6, "category": "lamp", "box": {}}]
    rec = Record(id="r", scene_id="s", task="distance", source="toy", question="How far apart are <OBJ> and <OBJ>?",
                 answers=["1.0"], target_ids=[3, 9])
    ex = record_example(rec, segs, NUM_OBJ)
    # Segment 1 is background (label -1): it gets no identifier, so segment 2 is <OBJ001>.
    assert ex.question == "How far apart are <OBJ000> and <OBJ001>?" and ex.answer == "1.0"
    assert ex.meta["object_ids"] == [0, 2]
    grd = Record(id="g", scene_id="s", task="multi_grounding", source="toy", question="Find all sofas.",
                 answer_type="objects", target_ids=[])
    assert record_example(grd, segs, NUM_OBJ).answer == "none"
    # Instance 7 equals segment 0's label but no segment was matched to it.
    missing = Record(id="m", scene_id="s", task="grounding", source="toy", question="Find the bed.",
                     answer_type="objects", target_ids=[7])
    assert record_example(missing, segs, NUM_OBJ) is None  # not trainable: its target has no segment
    assert record_example(missing, segs, NUM_OBJ, with_answer=False) is not None  # still answerable


def test_stages_2_and_3_replay_stage_1_naming():
    """Stages 2-3 keep every stage-1 naming example (else a small model forgets how to name)."""
    import random

    from trainer.examples import build_examples

    segs = [{"id": i, "label": i if i % 3 else -1, "category": ["chair", "lamp"][i % 2] if i % 3 else None,
             "box": {"center": [float(i), 1.0, 0.5], "size": [0.5, 0.5, 1.0]}} for i in range(9)]
    names = {(e.question, e.answer) for e in build_examples(1, "s", segs, [], NUM_OBJ, random.Random(0))
             if e.task == "object_name"}
    assert len(names) == 6  # the six instance segments
    for stage in (2, 3):
        got = build_examples(stage, "s", segs, [], NUM_OBJ, random.Random(0))
        assert {(e.question, e.answer) for e in got if e.task == "object_name"} == names, stage
        assert any(e.task not in ("object_name", "object_id") for e in got), stage


def _build_from_seed(base, **fourier) -> Proxy3DModel:
    """A fresh model built from one fixed random state, with the given Fourier settings."""
    torch.manual_seed(7)
    return Proxy3DModel.build(str(base), feat_dim=128, num_obj_tokens=NUM_OBJ, categories=list(CATEGORIES),
                              height_bins=16, height_range=(-0.5, 3.5), fourier_dim=16, **fourier)


def test_fourier_sigma_scales_the_initial_frequencies_and_the_export_keeps_them(base, tmp_path):
    """train.fourier_sigma sets the spread of the (x, y) frequencies when a model is built: from the
    same random state, sigma 3.0 draws exactly ten times sigma 0.3's frequencies (normal_ is
    mean + std * noise); the exported model loads back with its frequencies and its sigma recorded."""
    built = {sigma: _build_from_seed(base, fourier_sigma=sigma) for sigma in (0.3, 3.0)}
    low, high = (built[s].fourier.freq.weight.detach() for s in (0.3, 3.0))
    assert torch.allclose(high, 10 * low, rtol=1e-5, atol=1e-7) and float(low.abs().max()) > 0
    built[0.3].export(tmp_path / "m")
    back = Proxy3DModel.from_pretrained(tmp_path / "m")
    assert back.cfg.fourier_sigma == 0.3
    assert torch.equal(back.fourier.freq.weight.detach(), low)


def test_fourier_out_scale_scales_the_initial_term_and_the_export_keeps_it(base, tmp_path):
    """train.fourier_out_scale sets the Fourier term's initial size: from the same random state the
    last layer draws exactly 50 times its default (0.02) weights at 1.0, the same frequencies, so the
    term itself is 50 times larger (its bias starts at zero); the export records the scale."""
    built = {scale: _build_from_seed(base, fourier_out_scale=scale) for scale in (0.02, 1.0)}
    small, large = built[0.02].fourier, built[1.0].fourier
    assert torch.equal(small.freq.weight, large.freq.weight)
    assert torch.allclose(large.mlp[2].weight, 50 * small.mlp[2].weight, rtol=1e-5, atol=1e-8)
    xy = torch.tensor([[[0.5, 1.5], [3.0, -2.0]]])
    with torch.no_grad():
        assert torch.allclose(large(xy), 50 * small(xy), rtol=1e-4, atol=1e-7)
        assert float(small(xy).abs().max()) > 0
    assert built[0.02].cfg.fourier_out_scale == 0.02  # the default when a workflow says nothing
    built[1.0].export(tmp_path / "m")
    assert Proxy3DModel.from_pretrained(tmp_path / "m").cfg.fourier_out_scale == 1.0


def test_axis_ladder_puts_half_the_frequencies_on_each_axis_the_same_for_every_seed(base, tmp_path):
    """train.fourier_frequencies: axis_ladder draws no frequency: the first half lie along x, the second
    along y, each the log-spaced ladder from 0.05 to 1 cycle per metre (fourier_dim 16: four per axis,
    ratio 20 ** (1/3) between neighbours); so the first half of the features moves with x only and the
    second with y only. The export loads back with the ladder and the setting recorded."""
    from trainer.positions import FourierXY

    model = _build_from_seed(base, fourier_frequencies="axis_ladder")
    freq = model.fourier.freq.weight.detach()
    ladder = [0.05 * 20 ** (i / 3) for i in range(4)]
    assert torch.allclose(freq[:4, 0], torch.tensor(ladder), rtol=1e-5) and torch.all(freq[:4, 1] == 0)
    assert torch.allclose(freq[4:, 1], torch.tensor(ladder), rtol=1e-5) and torch.all(freq[4:, 0] == 0)
    torch.manual_seed(123)
    assert torch.equal(FourierXY(32, 16, frequencies="axis_ladder").freq.weight, freq)  # no seed in it
    proj = lambda xy: model.fourier.freq(torch.tensor(xy))  # noqa: E731
    moved_x, moved_y = proj([3.0, 1.0]) - proj([1.0, 1.0]), proj([1.0, 4.0]) - proj([1.0, 1.0])
    assert torch.all(moved_x[4:] == 0) and torch.all(moved_x[:4] != 0)
    assert torch.all(moved_y[:4] == 0) and torch.all(moved_y[4:] != 0)
    model.export(tmp_path / "m")
    back = Proxy3DModel.from_pretrained(tmp_path / "m")
    assert back.cfg.fourier_frequencies == "axis_ladder" and torch.equal(back.fourier.freq.weight.detach(), freq)
    with pytest.raises(ValueError, match="divisible by 4"):
        FourierXY(32, 18, frequencies="axis_ladder")
    with pytest.raises(ValueError, match="must be one of"):
        FourierXY(32, 16, frequencies="uniform")
