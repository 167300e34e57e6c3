"""Stage ``demo``: writes the seeded demo corpus, its QA set and ``summary.json`` (layout: :mod:`lmpipe.demo`)."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from lmpipe.demo.config import DemoConfig

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor
from lmpipe.demo import instruct, mathgen, noise, stdlib, world
from lmpipe.demo.web import title_of, web_article_like, write_crawl


def _jsonl(path: Path, rows: list[dict], gz: bool = False) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


def _take(items: list, n: int, rng: random.Random) -> list:
    items = list(items)
    rng.shuffle(items)
    return items[:n]


def generate(cfg: DemoConfig, seed: int, raw_dir: str | Path, eval_dir: str | Path) -> dict:
    raw, ev = Path(raw_dir), Path(eval_dir)
    for d in (raw / "fiction", raw / "web", raw / "crawl", ev):
        d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    planted: Counter[str] = Counter()

    long_enough = ((loc, t) for loc, t in stdlib.docstrings(rng) if len(t) >= cfg.min_doc_chars)
    prose = [{"text": t[: cfg.max_doc_chars], "title": loc} for loc, t in stdlib.take(long_enough, cfg.prose_docs)]
    code = [{"text": t, "path": loc}
            for loc, t in stdlib.take(stdlib.code_chunks(rng, cfg.min_doc_chars, cfg.max_doc_chars), cfg.code_docs)]
    maths = [{"text": mathgen.problem(rng)} for _ in range(cfg.math_docs)]
    orgs = world.make_world(cfg.fiction_entities, seed)
    articles = {o.slug: world.article(o, rng) for o in orgs}

    # duplicates: planted inside their own domain so dedup has real work there
    n_noise = max(1, round(cfg.noise_fraction * (len(prose) + len(code) + len(maths) + len(orgs))))
    n_dup = max(1, n_noise // 4)
    for r in _take(prose, n_dup, rng):
        prose.append({**r, "noise": "exact_dup"})
        prose.append({**r, "text": noise.near_duplicate(r["text"], rng), "noise": "near_dup"})
        planted.update(exact_dup=1, near_dup=1)
    for slug in _take(sorted(articles), max(1, n_dup // 2), rng):
        (raw / "fiction" / f"{slug}-mirror.md").write_text(articles[slug])
        planted["exact_dup"] += 1
    rng.shuffle(prose)

    web: list[dict] = []
    kinds = ["boilerplate", "spam", "toxic", "mojibake", "short", "long"]
    terms = noise.listed_terms()
    for i in range(n_noise):
        kind, base = kinds[i % len(kinds)], rng.choice(prose)["text"]
        text = {
            "boilerplate": lambda: noise.boilerplate(rng),
            "spam": lambda: noise.spam(rng),
            "toxic": lambda b=base: noise.toxic(rng, b, terms),
            "mojibake": lambda b=base: noise.mojibake(b),
            "short": lambda: noise.short(rng),
            "long": lambda b=base: noise.very_long(rng, b, 4 * cfg.max_doc_chars),
        }[kind]()
        web.append({"text": text, "noise": kind})
        planted[kind] += 1

    _jsonl(raw / "prose.jsonl.gz", prose, gz=True)
    pq.write_table(pa.Table.from_pylist(code), raw / "code.parquet", compression="zstd")
    _jsonl(raw / "math.jsonl", maths)
    for slug, text in articles.items():
        (raw / "fiction" / f"{slug}.md").write_text(text)
    _jsonl(raw / "web" / "pages.jsonl", web)
    broken = noise.broken_jsonl_lines(rng)
    (raw / "web" / "broken.jsonl").write_bytes(b"\n".join(broken) + b"\n")
    (raw / "web" / "blob.txt").write_bytes(noise.binary_blob(rng))
    # a legacy encoding that ingestion detects and decodes (meta["encoding"]), unlike the broken lines
    (raw / "web" / "latin1.txt").write_bytes("Ein Stück Käse, im Latin-1-Format gespeichert.".encode("latin-1"))
    planted.update(undecodable=len(broken) + 1, legacy_encoding=1)

    (raw / "labels").mkdir(exist_ok=True)
    # every clean domain is a negative, so code and math are not "unusual, hence toxic" to the classifier
    clean = [r["text"] for r in prose[:200] + code[:100] + maths[:100]] + list(articles.values())
    # its own generator, so the labelled set does not shift when the noise above draws differently
    labels_rng = random.Random(f"{seed}/toxicity-labels")
    _jsonl(raw / "labels" / "toxicity.jsonl", noise.toxicity_training_set(labels_rng, clean, cfg.toxicity_examples))

    qa = [q for o in orgs for q in world.questions(o, orgs, rng)]
    _jsonl(ev / "fiction_qa.jsonl", qa)

    # docstrings after those taken as prose: distinct text, so dedup has no cross-domain work here
    seen = {r["text"] for r in prose}
    fresh = ((loc, t) for loc, t in long_enough  # one page per docstring, article-like ones (web rules judge them)
             if web_article_like(t) and t not in seen and not seen.add(t))
    pages = [(title_of(loc), t[: cfg.max_doc_chars]) for loc, t in stdlib.take(fresh, cfg.web_pages)]
    crawl = write_crawl(raw / "crawl" / "pages.warc.gz", pages, seed)
    planted.update({f"crawl_{k}": v for k, v in crawl["planted"].items()})
    posttrain = instruct.generate(cfg.instruct, orgs, seed, raw / "instruct", ev)

    summary = {
        "docs": {"prose": len(prose), "code": len(code), "math": len(maths),
                 "fiction": len(articles) + sum(1 for _ in (raw / "fiction").glob("*-mirror.md")), "web": len(web),
                 "crawl": crawl["records"]},
        "planted": dict(sorted(planted.items())),
        "qa_questions": len(qa),
        "instruct": posttrain,
    }
    (raw / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def run(p: Params, io: StageIO, ex: Executor) -> dict:
    """Stage ``demo``: the seeded demo corpus into ``io.raw`` and its QA set into ``io.eval``."""
    return generate(p.demo, p.run.seed, io.raw, io.eval)
