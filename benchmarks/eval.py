"""Caption scoring time: one METEOR Java process for every corpus (what `p3d eval` does) beside a new
process per corpus (pycocoevalcap's own usage, the baseline), on the corpora a Scan2Cap eval scores.

    python benchmarks/eval.py [--captions 143] [--corpora 3] [--repeats 2]

A Scan2Cap eval scores three corpora of the same objects (@0.25, @0.5 and plain,
pipeline/eval/metrics.py `eval_scan2cap`); the captions here are toy-world descriptions, one
reference each, the hypothesis a shortened reference or "sos eos" for a miss. Both columns score
the same corpora and must give the same scores; the script checks that before it prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import best_of  # noqa: E402


def corpora(num_captions: int, num_corpora: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    words = ["a", "small", "large", "red", "blue", "wooden", "chair", "table", "lamp", "sofa", "near", "on", "the"]
    refs = {str(i): ["sos " + " ".join(rng.choice(words, 8)) + " eos"] for i in range(num_captions)}
    out = []
    for _ in range(num_corpora):
        hyps = {}
        for key, [ref] in refs.items():
            tokens = ref.split()[1:-1]
            hyps[key] = "sos eos" if rng.random() < 0.3 else "sos " + " ".join(tokens[: rng.integers(2, 8)]) + " eos"
        out.append(hyps)
    return refs, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", type=int, default=143, help="objects per corpus (the toy demo's 24 held-out "
                   "rooms: 143)")
    p.add_argument("--corpora", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    from pipeline.eval.captions import meteor_scorer, require_java, score_captions

    require_java()
    refs, hyps = corpora(args.captions, args.corpora)

    def fresh_each():
        scores = []
        for h in hyps:
            meteor_scorer.cache_clear()  # a new Java process for this corpus
            scores.append(score_captions(refs, h, metrics=("METEOR",), tokenize=False).corpus["METEOR"])
        return scores

    def reused():
        meteor_scorer.cache_clear()  # one new process, then reused
        return [score_captions(refs, h, metrics=("METEOR",), tokenize=False).corpus["METEOR"] for h in hyps]

    t_fresh, s_fresh = best_of(fresh_each, args.repeats)
    t_reused, s_reused = best_of(reused, args.repeats)
    if s_fresh != s_reused:
        raise SystemExit(f"scores differ: fresh {s_fresh} against reused {s_reused}")
    print(f"METEOR on {args.corpora} corpora of {args.captions} captions (best of {args.repeats}):")
    print(f"  a new Java process per corpus (baseline): {t_fresh:6.2f} s")
    print(f"  one process for all (p3d eval):           {t_reused:6.2f} s   ({t_fresh / t_reused:.1f}x)")
    print(f"  scores, identical in both: {', '.join(f'{100 * s:.2f}' for s in s_reused)}")


if __name__ == "__main__":
    main()
