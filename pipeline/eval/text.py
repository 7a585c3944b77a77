"""Answer normalization and parsing, following each benchmark's own evaluation code.

- `clean_answer`: the LEO cleaning used by ScanQA / SQA3D exact match (lower case, punctuation
  out, common typos fixed, small numbers spelled out, leading articles dropped).
- `em_and_refined`: EM@1 and the refined EM-R (a match also counts when one answer, spaces
  removed, contains the other); `qa_match` applies one of the named published conventions
  (`QA_CONVENTIONS`: scanqa, leo, chatscene).
- `normalize_text`: the VQA/SQuAD-style normalization used for toy text answers.
- `parse_choice` / `parse_number`: read a multiple-choice letter or a number out of free text,
  VSI-Bench style (first word, trailing period stripped) with fallbacks for longer outputs.
"""

from __future__ import annotations

import re
import string

_TYPO_FIXES = (
    (r"\bletf\b", "left"), (r"\blet\b", "left"), (r"\btehre\b", "there"), (r"\brigth\b", "right"),
    (r"\brght\b", "right"), (r"\bbehine\b", "behind"), (r"\btv\b", "TV"), (r"\bchai\b", "chair"),
    (r"\bwasing\b", "washing"), (r"\bwaslked\b", "walked"), (r"\boclock\b", "o'clock"),
    (r"\bo'[ ]+clock\b", "o'clock"),
)
_NUMBER_WORDS = {
    0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
    9: "nine", 10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen",
    16: "sixteen", 17: "seventeen", 18: "eighteen", 19: "nineteen", 20: "twenty", 23: "twenty-three",
}
_WORD_NUMBERS = {w: n for n, w in _NUMBER_WORDS.items()}
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def clean_answer(text: str) -> str:
    """LEO's answer cleaning (ScanQA, SQA3D), applied to predictions and references alike."""
    s = text.lower().strip()
    s = re.sub(" {2,}", " ", s)
    s = re.sub(r"\.[ ]{2,}", ". ", s)
    s = s.replace("\u2019", "'").replace("ç", "c")
    s = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", s)
    for pattern, repl in _TYPO_FIXES:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"\bnone\b", "zero", s)
    for number, word in _NUMBER_WORDS.items():
        s = re.sub(rf"\b{number}\b", word, s)
    s = re.sub(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>", s)  # "mat2" -> "mat": instance suffixes
    s = re.sub(r"\b(?:a|an|the)\b ([a-zA-Z]+)", r"\g<1>", s)
    s = re.sub(r"\bbackwards\b", "backward", s)
    return s.strip()


def em_and_refined(pred: str, refs: list[str]) -> tuple[int, int]:
    """(EM, EM-R) of one cleaned prediction against cleaned references, order-free: EM when the
    prediction is among the references, EM-R also when one of them, spaces removed, contains the other."""
    if not pred:
        return 0, 0
    if pred in refs:
        return 1, 1
    return 0, int(any(_contains_either(pred, ref) for ref in refs))


def _contains_either(pred: str, ref: str) -> bool:
    p, r = "".join(pred.split()), "".join(ref.split())
    return bool(p and r) and (p in r or r in p)


def _em_scanqa(pred: str, refs: list[str]) -> tuple[int, int]:
    return em_and_refined(clean_answer(pred), [clean_answer(a) for a in refs])


def _em_leo(pred: str, refs: list[str]) -> tuple[int, int]:
    # LEO (embodied-generalist, evaluator/scanqa_eval.py answer_match) walks the references in
    # order and stops at the first that matches in any way: a substring match with an earlier
    # reference hides an exact match with a later one.
    pred = clean_answer(pred)
    if not pred:
        return 0, 0
    for ref in (clean_answer(a) for a in refs):
        if pred == ref:
            return 1, 1
        if _contains_either(pred, ref):
            return 0, 1
    return 0, 0


def _em_chatscene(pred: str, refs: list[str]) -> tuple[int, int]:
    # Chat-Scene (ZzZZCHS/Chat-Scene, calc_scanqa_score, the release that scores against the raw
    # ref_captions): trailing period off, first letter lower-cased, then LEO's cleaning of the
    # prediction only; the references stay as written (case, digits, articles kept).
    text = pred.strip()
    if len(text) > 1:
        text = text[:-1] if text.endswith(".") else text
        text = text[0].lower() + text[1:]
    text = clean_answer(text)
    if not text:
        return 0, 0
    if text in refs:
        return 1, 1
    return 0, int(any(_contains_either(text, ref) for ref in refs))


# EM / EM-R conventions of the published ScanQA and SQA3D numbers (README, "Evaluation").
# Each takes the raw prediction and the raw reference answers. An empty answer is never a match:
# LEO's and Chat-Scene's substring test would find "" inside every reference.
QA_CONVENTIONS = {
    "scanqa": _em_scanqa,  # official ScanQA scorer: the (cleaned) answer is among the answers
    "leo": _em_leo,
    "chatscene": _em_chatscene,
}


def qa_match(pred: str, refs: list[str], convention: str = "scanqa") -> tuple[int, int]:
    """(EM, EM-R) of one raw prediction against raw references under a named convention."""
    if convention not in QA_CONVENTIONS:
        raise ValueError(f"unknown QA convention {convention!r}; choose from {', '.join(QA_CONVENTIONS)}")
    return QA_CONVENTIONS[convention](pred, refs)


def normalize_text(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    s = text.lower()
    s = "".join(ch if ch not in string.punctuation else " " for ch in s)
    s = re.sub(r"\b(?:a|an|the)\b", " ", s)
    return " ".join(s.split())


def parse_number(text: str) -> float | None:
    """The number an answer states: the first numeric token, else a spelled-out small number."""
    m = _NUMBER.search(text.replace(",", ""))
    if m:
        try:
            return float(m.group(0))
        except ValueError:
            return None
    for word in normalize_text(text).split():
        if word in _WORD_NUMBERS:
            return float(_WORD_NUMBERS[word])
    return None


def strip_choice_prefix(choice: str) -> str:
    """'A. chair' -> 'chair' (VSI-Bench writes the letter into each option)."""
    m = re.match(r"^\s*\(?([A-Za-z])[\.\):]\s+(.*)$", choice)
    return m.group(2) if m else choice


def parse_choice(text: str, choices: list[str]) -> int | None:
    """Index of the chosen option: a leading letter ('B', 'B.', '(B)'), else the option text."""
    letters = string.ascii_uppercase[: len(choices)]
    stripped = text.strip()
    first = stripped.split(" ")[0].rstrip(".").strip("()") if stripped else ""
    # A lone lower-case "a" starts many sentences ("a chair"); only an upper-case letter or a
    # letter standing alone is read as an option letter.
    alone = len(stripped.strip("().: ")) == 1
    if len(first) == 1 and first.upper() in letters and (first.isupper() or alone):
        return letters.index(first.upper())
    norm = normalize_text(stripped)
    options = [normalize_text(strip_choice_prefix(c)) for c in choices]
    if norm in options:
        return options.index(norm)
    # A longer answer that names exactly one option ("the chair is closer") still counts.
    hits = [i for i, o in enumerate(options) if o and re.search(rf"\b{re.escape(o)}\b", norm)]
    return hits[0] if len(hits) == 1 else None


def answer_choice_index(answer: str, choices: list[str]) -> int:
    """Index of the reference answer among choices (a letter or the option text)."""
    idx = parse_choice(answer, choices)
    if idx is None:
        raise ValueError(f"reference answer {answer!r} is not one of the choices {choices}")
    return idx
