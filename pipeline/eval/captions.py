"""Caption n-gram scores through pycocoevalcap: PTB tokenization, BLEU-1..4, METEOR, ROUGE-L, CIDEr.

The PTB tokenizer and METEOR are Java programs; `require_java` fails early with a clear message.
Scores are returned as fractions (0..1) with per-sample lists, in the order of the input keys.
"""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass, field

# Scan2Cap's official eval (github.com/daveredrum/Scan2Cap, lib/eval_helper.py): references are
# "sos <first MAX_DES_LEN tokens> eos"; an object whose box misses is captioned "sos eos".
SCAN2CAP_MAX_TOKENS = 30
SCAN2CAP_EMPTY = "sos eos"
# scan2cap: official, a hit is IoU > k, strings scored as they are (tokens joined by spaces);
# chatscene: Chat-Scene's utils/eval.py, a hit is IoU >= k, both sides PTB-tokenized first.
CAPTION_CONVENTIONS = ("scan2cap", "chatscene")


class JavaMissingError(RuntimeError):
    pass


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "`java` was not found on PATH: pycocoevalcap's PTB tokenizer and METEOR need a Java "
            "runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    return java


@dataclass
class CaptionScores:
    corpus: dict[str, float] = field(default_factory=dict)  # metric -> corpus score
    per_sample: dict[str, list[float]] = field(default_factory=dict)  # metric -> score per key


def ptb_tokenize(texts: dict[str, list[str]]) -> dict[str, list[str]]:
    """COCO caption tokenization (lower case, PTB tokens, punctuation dropped)."""
    require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # The tokenizer pairs output lines with captions: a newline inside a caption would shift every
    # later one, and a trailing empty line can be dropped, so empty captions become "." (a
    # punctuation token the tokenizer removes again, leaving the empty caption).
    coco = {k: [{"caption": " ".join(t.split()) or "."} for t in v] for k, v in texts.items()}
    return PTBTokenizer().tokenize(coco)


def score_captions(
    refs: dict[str, list[str]],
    hyps: dict[str, str],
    metrics: tuple[str, ...] = ("BLEU", "METEOR", "ROUGE-L", "CIDEr"),
    tokenize: bool = True,
) -> CaptionScores:
    """Score one hypothesis per key against its references (keys must match)."""
    if set(refs) != set(hyps):
        raise ValueError("references and hypotheses must have the same keys")
    if any(len(v) == 0 for v in refs.values()):
        raise ValueError("every sample needs at least one reference caption")
    keys = list(refs)
    if not keys:
        return CaptionScores()
    if tokenize:
        gts = ptb_tokenize({k: refs[k] for k in keys})
        res = ptb_tokenize({k: [hyps[k]] for k in keys})
    else:
        gts = {k: list(refs[k]) for k in keys}
        res = {k: [hyps[k]] for k in keys}
    out = CaptionScores()
    for name in metrics:
        scorer, labels = _scorer(name)
        try:
            corpus, per = scorer.compute_score(gts, res)
        except Exception:
            if name == "METEOR":
                meteor_scorer.cache_clear()  # a failed Java process is not reused
            raise
        if isinstance(labels, tuple):
            for label, c, p in zip(labels, corpus, per):
                out.corpus[label] = float(c)
                out.per_sample[label] = [float(x) for x in p]
        else:
            out.corpus[labels] = float(corpus)
            out.per_sample[labels] = [float(x) for x in per]
    return out


def _scorer(name: str):
    if name == "BLEU":
        from pycocoevalcap.bleu.bleu import Bleu

        return Bleu(4), ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
    if name == "METEOR":
        return meteor_scorer(), "METEOR"
    if name == "ROUGE-L":
        from pycocoevalcap.rouge.rouge import Rouge

        return Rouge(), "ROUGE-L"
    if name == "CIDEr":
        from pycocoevalcap.cider.cider import Cider

        return Cider(), "CIDEr"
    raise ValueError(f"unknown caption metric {name!r}")


@functools.lru_cache(maxsize=1)
def meteor_scorer():
    """One METEOR Java process per Python process, reused for every corpus it scores: each start
    loads its paraphrase tables, and a Scan2Cap eval scores three corpora (@0.25, @0.5, plain).
    `meteor_scorer.cache_clear()` makes the next call start a new one.
    measured: docs/RESULTS.md#meteor-reuse"""
    require_java()
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def caption_tokens(text: str) -> list[str]:
    """Lower-case words and punctuation marks as separate tokens, the shape of ScanRefer's `token`."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def scan2cap_reference(tokens: list[str]) -> str:
    return " ".join(["sos", *tokens[:SCAN2CAP_MAX_TOKENS], "eos"])


def scan2cap_candidate(text: str | None, convention: str) -> str:
    """A prediction as the convention's scorer sees it; None (a miss) is "sos eos"."""
    if text is None:
        return SCAN2CAP_EMPTY
    if convention == "chatscene":
        return f"sos {' '.join(text.split())} eos"  # the PTB tokenizer does the rest
    return " ".join(["sos", *caption_tokens(text), "eos"])
