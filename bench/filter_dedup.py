"""Benchmark: our score+select (Gopher repetition, Gopher quality, C4, FineWeb) vs datatrove's filters.

Same input (real text from ../shared/data: WikiText-2 articles, GSM8K problems, SymPy source, Shakespeare),
same thresholds (the published defaults), same run, one process each. Reports docs/s, MB/s and, per rule set,
the keep/drop agreement with datatrove. If ``bench/dedup_part.py`` exists its ``bench_dedup(texts)`` adds
MinHash vs datasketch. Writes ``bench/results/filter_dedup.json``.

    python bench/filter_dedup.py [--per-source 500]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def load_texts(per_source: int) -> dict[str, list[str]]:
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


def ours(texts: list[str]) -> tuple[float, dict[str, list[bool]]]:
    from lmpipe.config import FilterScoreConfig, RuleSet
    from lmpipe.filters.score import Scorer
    from lmpipe.filters.select import check
    from lmpipe.filters.text import split_words

    scorer = Scorer(FilterScoreConfig())
    rules = RuleSet(encoding=None, language=None, toxicity=None, decontamination=False)
    keep: dict[str, list[bool]] = {f: [] for f in ("gopher_repetition", "gopher_quality", "c4", "fineweb")}
    t0 = time.perf_counter()
    for text in texts:
        failed = {f.family for f in check(scorer.heuristics(text, split_words(text)), rules)}
        for fam, col in keep.items():
            col.append(fam not in failed)
    return time.perf_counter() - t0, keep


def datatrove(texts: list[str]) -> tuple[float, dict[str, list[bool]]]:
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
    filters["gopher_quality"].filter(Document(text="warm up the tokenizer " * 20, id="w"))  # spaCy load
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        for name, flt in filters.items():
            res = flt.filter(Document(text=text, id=str(i)))
            keep[name].append(res is True or (isinstance(res, tuple) and res[0]))
    return time.perf_counter() - t0, keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-source", type=int, default=500, help="documents taken from each source")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "filter_dedup.json"))
    args = ap.parse_args()
    if not (DATA / "README.md").exists():
        sys.exit(f"shared data not found at {DATA}")
    sources = load_texts(args.per_source)
    texts = [t for v in sources.values() for t in v]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    result: dict = {"input": {k: len(v) for k, v in sources.items()}, "docs": len(texts), "mb": round(mb, 3),
                    "cpu_note": "one process each, same machine, same run"}
    t_ours, k_ours = ours(texts)
    result["ours"] = {"seconds": round(t_ours, 2), "docs_per_s": round(len(texts) / t_ours, 1),
                      "mb_per_s": round(mb / t_ours, 3)}
    try:
        t_dt, k_dt = datatrove(texts)
    except ImportError as exc:
        result["datatrove"] = {"error": f"not installed ({exc}); pip install -e '.[bench]'"}
    else:
        result["datatrove"] = {"seconds": round(t_dt, 2), "docs_per_s": round(len(texts) / t_dt, 1),
                               "mb_per_s": round(mb / t_dt, 3)}
        result["speedup"] = round(t_dt / t_ours, 2)
        agree = {}
        for fam in k_ours:
            same = sum(a == b for a, b in zip(k_ours[fam], k_dt[fam], strict=True))
            agree[fam] = {"agreement": round(same / len(texts), 4), "ours_kept": sum(k_ours[fam]),
                          "datatrove_kept": sum(k_dt[fam])}
        result["agreement"] = agree
    part = ROOT / "bench" / "dedup_part.py"
    if part.exists():
        spec = importlib.util.spec_from_file_location("dedup_part", part)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        result["dedup"] = mod.bench_dedup(texts)
    else:
        result["dedup"] = {"skipped": "bench/dedup_part.py not found (the dedup benchmark provides bench_dedup)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
