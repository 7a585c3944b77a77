"""The prompt layout: every example goes through the checkpoint's own chat template.

A scene enters the user turn as an image does in Qwen2.5-VL's template: the user content is
`[{"type": "image"}, {"type": "text", "text": question}]`, which the template renders as
`<|vision_start|><|image_pad|><|vision_end|>question`; the one `<|image_pad|>` is then repeated once
per scene token, as Qwen2.5-VL's processor repeats it once per merged patch. With Qwen2.5-VL-Instruct's
template (no system message given, so its default one is used):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|image_pad|> x K<|vision_end|>question<|im_end|>\\n
    <|im_start|>assistant\\n            <- the generation prompt (prediction ends here)
    answer<|im_end|>                  <- training only

Labels: -100 on everything up to the generation prompt; the answer's tokens and the template's tail
up to and including the first end-of-turn token (`<|im_end|>`, the tokenizer's eos) are learned:
that token is where `Proxy3DModel.generate` stops, so the model must learn to emit it. Whatever the
template writes after it (Qwen's `\\n`) is left out of the sequence: generation has stopped before it,
and a token after the last label cannot change the loss of a causal model (it would be masked and
cost compute only).

Pure: a tokenizer and strings in, token id lists out.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


@dataclass(frozen=True)
class ChatLayout:
    """One example's tokens: `prompt` holds one scene slot at `scene_at`; `response` (every token of
    it learned) is empty for a generation prompt."""

    prompt: list[int]
    scene_at: int
    response: list[int]


def _messages(question: str, answer: str | None) -> list[dict]:
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    return [user] if answer is None else [user, {"role": "assistant", "content": answer}]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def chat_layout(tokenizer, question: str, answer: str | None, scene_token_id: int,
                end_of_turn_id: int) -> ChatLayout:
    """The example rendered by `tokenizer.apply_chat_template` (module docstring). `answer=None`:
    the generation prompt alone, as prediction asks it."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; p3d "
                         "renders every prompt with the checkpoint's own (an Instruct checkpoint has one)")
    prompt_text = tokenizer.apply_chat_template(_messages(question, None), tokenize=False,
                                                add_generation_prompt=True)
    prompt = _ids(tokenizer, prompt_text)
    slots = [i for i, t in enumerate(prompt) if t == scene_token_id]
    if len(slots) != 1:
        raise ValueError(f"the chat template rendered {len(slots)} scene slots (<|image_pad|>) for one image; "
                         "expected exactly one")
    if answer is None:
        return ChatLayout(prompt, slots[0], [])
    full_text = tokenizer.apply_chat_template(_messages(question, answer), tokenize=False)
    rest = full_text[len(prompt_text):]
    if not full_text.startswith(prompt_text) or not rest.startswith(answer):
        raise ValueError("the chat template does not write the assistant's answer right after its generation "
                         f"prompt (rendered {full_text[-200:]!r}); p3d cannot place the loss on the answer")
    answer_ids, tail_ids = _ids(tokenizer, answer), _ids(tokenizer, rest[len(answer):])
    if end_of_turn_id not in tail_ids:
        raise ValueError(f"the chat template ends the assistant turn without the end-of-turn token "
                         f"{tokenizer.convert_ids_to_tokens(end_of_turn_id)!r} that generation stops at")
    return ChatLayout(prompt, slots[0], answer_ids + tail_ids[:tail_ids.index(end_of_turn_id) + 1])
