"""A small byte-level BPE tokenizer with Qwen's special tokens and chat turns, for models p3d builds.

Models built with random weights (`random:` ids, real_configs.py; `toy:` ids, pipeline/toy/models.py)
have no hub tokenizer to download: they get this one, trained on the given texts, saved with
`save_pretrained` beside the model, and loaded back through the same `AutoTokenizer` code as Qwen's.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2.5-VL-Instruct's chat template reduced to what p3d sends: the same turns and vision markers
# (text and image parts; no video, no "Picture N:" labels), so prompts run through the same
# `apply_chat_template` code (trainer/chat.py), but without Qwen's default system prompt when none is
# given: for a random-init model it is a constant prefix that teaches nothing and would add 11 tokens
# to every toy example (stage 1's are ~25 tokens long).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_BASE_TEXT = [
    "system\nuser\nassistant\n",  # the chat template's role names, each one token
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 0.5 1.25 metres meters",
    "What is this object? How many are there? Where is it? left right front behind above below yes no",
]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, model_max_length: int = 4096):
    """A byte-level BPE tokenizer with Qwen's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(_BASE_TEXT) + list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, model_max_length=model_max_length,
                                   chat_template=PLAIN_CHAT_TEMPLATE)
