"""Filter benchmark: our score+select (Gopher repetition, Gopher quality, C4, FineWeb) vs datatrove's filters.

Same input (real text from ../shared/data: WikiText-2 articles, GSM8K problems, SymPy source, Shakespeare),
same thresholds (the published defaults), same run, one process each, interleaved repeats. Reports docs/s and
MB/s and, per rule family, the keep/drop agreement with datatrove. (MinHash dedup vs datasketch is
``bench/dedup_part.py``.) Writes ``bench/results/filter_dedup.json``.

    python bench/filter_dedup.py [--per-source 60]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, rate, require_shared, table, write_result  # noqa: E402


def load_texts(per_source: int) -> dict[str, list[str]]:
    DATA = require_shared()  # noqa: N806
    wiki: list[str] = []
    for name in ("valid.txt", "test.txt"):
        cur: list[str] = []
        for line in (DATA / "wikitext-2" / name).read_text().splitlines(keepends=True):
            if re.match(r"^ = [^=].* = \n$", line) and cur:
                wiki.append("".join(cur))
                cur = []
            cur.append(line)
        if cur:
            wiki.append("".join(cur))
    out = {"wikitext": wiki}
    for key, path in (("gsm8k", "domains/math/gsm8k_train.jsonl"), ("sympy", "domains/code/sympy_python.jsonl")):
        with open(DATA / path) as f:
            out[key] = [json.loads(line)["text"] for line in f]
    plays = (DATA / "tinyshakespeare" / "input.txt").read_text().split("\n\n")
    out["shakespeare"] = ["\n\n".join(plays[i : i + 20]) for i in range(0, len(plays), 20)]
    return {k: v[:per_source] for k, v in out.items()}


FAMILIES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def ours(texts: list[str]) -> dict[str, list[bool]]:
    from lmpipe.config import FilterScoreConfig, RuleSet
    from lmpipe.filters.score import Scorer
    from lmpipe.filters.select import check
    from lmpipe.filters.text import split_words

    scorer = Scorer(FilterScoreConfig())
    rules = RuleSet(encoding=None, language=None, toxicity=None, decontamination=False)
    keep: dict[str, list[bool]] = {f: [] for f in FAMILIES}
    for text in texts:
        failed = {f.family for f in check(scorer.heuristics(text, split_words(text)), rules)}
        for fam, col in keep.items():
            col.append(fam not in failed)
    return keep


def datatrove(texts: list[str]) -> dict[str, list[bool]]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
               "c4": C4QualityFilter(filter_no_terminal_punct=True), "fineweb": FineWebQualityFilter()}
    keep: dict[str, list[bool]] = {f: [] for f in filters}
    for i, text in enumerate(texts):
        for name, flt in filters.items():
            res = flt.filter(Document(text=text, id=str(i)))
            keep[name].append(res is True or (isinstance(res, tuple) and res[0]))
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-source", type=int, default=60, help="documents taken from each of the 4 sources")
    args = ap.parse_args()
    sources = load_texts(args.per_source)
    texts = [t for v in sources.values() for t in v]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    if importlib.util.find_spec("datatrove") is None or importlib.util.find_spec("spacy") is None:
        sys.exit("datatrove/spaCy not installed: pip install -e '.[bench]' (make bench does)")
    t0 = time.perf_counter()
    datatrove(texts[:2])  # spaCy and filter set-up, outside the timed runs
    setup_s = time.perf_counter() - t0
    secs, keep = alternate({"lmpipe score + select": lambda: ours(texts),
                            "datatrove 0.10 filters (spaCy words)": lambda: datatrove(texts)})
    k_ours, k_dt = keep["lmpipe score + select"], keep["datatrove 0.10 filters (spaCy words)"]
    agree = {}
    for fam in FAMILIES:
        same = sum(a == b for a, b in zip(k_ours[fam], k_dt[fam], strict=True))
        agree[fam] = {"agreement": round(same / len(texts), 4), "lmpipe_kept": sum(k_ours[fam]),
                      "datatrove_kept": sum(k_dt[fam])}
    rows = {k: {"docs_per_s": rate(len(texts), v), "mb_per_s": rate(mb, v, 3)} for k, v in secs.items()}
    write_result(
        "filter_dedup",
        input={"sources": {k: len(v) for k, v in sources.items()}, "per_source_flag": args.per_source,
               "docs": len(texts), "mb": round(mb, 3)},
        tables=[table("Gopher repetition + Gopher quality + C4 + FineWeb, one process", "docs_per_s", rows,
                      ours=["lmpipe score + select"], peers=["datatrove 0.10 filters (spaCy words)"])],
        checks={"keep_drop_agreement_per_family": agree, "datatrove_setup_s_untimed": round(setup_s, 2)},
        notes=["Same rules and thresholds on both sides (the published defaults; C4 with "
               "filter_no_terminal_punct=True); datatrove splits words with spaCy, lmpipe with its own splitter."],
    )


if __name__ == "__main__":
    main()
