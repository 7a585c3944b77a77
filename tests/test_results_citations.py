"""docs/RESULTS.md is the one home of measured findings (issue 21): every citation of it in code,
workflows, tests and the README names an entry that exists, and no entry is there twice."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"
CITED_FROM = ["pipeline", "trainer", "schemas", "benchmarks", "workflows", "tests"]
CITATION = re.compile(r"docs/RESULTS\.md#([A-Za-z0-9_-]+)")


def _anchor(heading: str) -> str:
    # GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'.
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _entries() -> list[str]:
    return [_anchor(line.lstrip("#")) for line in RESULTS.read_text().splitlines()
            if re.match(r"#{2,6} ", line)]


def _citations() -> dict[str, list[str]]:
    files = [ROOT / "README.md", RESULTS]
    for folder in CITED_FROM:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md")]
    cited: dict[str, list[str]] = {}
    for path in files:
        for anchor in CITATION.findall(path.read_text(errors="replace")):
            cited.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    return cited


def test_anchor_follows_github_rules():
    assert _anchor(" demo-latest") == "demo-latest"
    assert _anchor("Stage 1: the plateau") == "stage-1-the-plateau"


def test_every_entry_once():
    entries = _entries()
    assert entries, f"{RESULTS} has no entries"
    assert len(entries) == len(set(entries)), sorted(a for a in entries if entries.count(a) > 1)


def test_every_citation_names_an_entry():
    entries = set(_entries())
    cited = _citations()
    assert cited, "nothing cites docs/RESULTS.md"
    missing = {anchor: where for anchor, where in cited.items() if anchor not in entries}
    assert not missing, f"citations of entries docs/RESULTS.md lacks: {missing}"
