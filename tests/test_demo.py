"""The generated demo corpus: deterministic, QA answerable from the articles, noise and labels usable."""

import gzip
import hashlib
import json

import pytest

from lmpipe.demo.config import DemoConfig
from lmpipe.demo.corpus import generate

SMALL = DemoConfig(prose_docs=60, code_docs=40, math_docs=60, fiction_entities=8, toxicity_examples=200)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = generate(SMALL, 7, root / "raw", root / "eval")
    return root, summary


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(demo, tmp_path):
    root, _ = demo
    generate(SMALL, 7, tmp_path / "raw", tmp_path / "eval")
    assert _digest(tmp_path) == _digest(root)


def test_every_answer_is_stated_in_its_article_and_is_one_of_the_choices(demo):
    root, summary = demo
    qa = [json.loads(line) for line in (root / "eval" / "fiction_qa.jsonl").read_text().splitlines()]
    assert len(qa) == summary["qa_questions"] == 6 * SMALL.fiction_entities
    for q in qa:
        article = (root / "raw" / "fiction" / f"{q['entity'].lower()}.md").read_text()
        assert q["answer"] in article, q
        assert q["choices"][q["answer_index"]] == q["answer"] and len(set(q["choices"])) == len(q["choices"])
        assert article not in q["question"]  # closed book: only the title is shared


def test_planted_duplicates_and_noise_are_labelled(demo):
    root, summary = demo
    prose = [json.loads(line) for line in gzip.decompress((root / "raw" / "prose.jsonl.gz").read_bytes()).splitlines()]
    texts = [r["text"] for r in prose if "noise" not in r]
    exact = [r for r in prose if r.get("noise") == "exact_dup"]
    assert exact and all(r["text"] in texts for r in exact)
    web = [json.loads(line) for line in (root / "raw" / "web" / "pages.jsonl").read_text().splitlines()]
    assert {r["noise"] for r in web} == {"boilerplate", "spam", "toxic", "mojibake", "short", "long"}
    assert summary["planted"]["undecodable"] == 7 and summary["planted"]["legacy_encoding"] == 1


def test_toxic_noise_uses_the_filters_real_list_not_the_classifier_labels(demo):
    from lmpipe.demo.noise import INSULTS
    from lmpipe.filters.text import normalize_words
    from lmpipe.filters.toxicity import WordList

    root, _ = demo
    web = [json.loads(line) for line in (root / "raw" / "web" / "pages.jsonl").read_text().splitlines()]
    toxic = [r["text"] for r in web if r["noise"] == "toxic"]
    ldnoobw = WordList.load()
    assert toxic and all(ldnoobw.count_text(t.split("\n\n")[-1]) >= 5 for t in toxic)
    insults = WordList(INSULTS)  # the demo's labelled training set is built from these, which are off the list
    assert not any(insults.count(normalize_words(t)) for t in toxic)


def test_labelled_toxicity_set_trains_a_classifier_that_flags_insults_only(demo):
    from lmpipe.filters.toxicity import HashedLogReg, read_labelled

    root, _ = demo
    rows = list(read_labelled(root / "raw" / "labels" / "toxicity.jsonl"))
    assert sum(y for _, y in rows) == len(rows) / 2
    clf = HashedLogReg().fit([t for t, _ in rows], [y for _, y in rows])
    clean = [
        "def add(a, b):\n    return a + b",
        "Question: Ada has 3 apples and buys 2 more. How many apples does Ada have?\nAnswer: 3 + 2 = 5\n#### 5",
        "If you are using your own messages, you could pass an ID instead of a format string.",
        "The harbour was rebuilt in 1850 after the storm.",
    ]
    assert all(clf.predict(t) < 0.5 for t in clean), [clf.predict(t) for t in clean]
    assert clf.predict("Nobody asked you, you pathetic worthless moron.") > 0.5


def test_demo_crawl_ingests_with_exactly_the_planted_quarantine(demo, tmp_path):
    from lmpipe.executors import LocalExecutor
    from lmpipe.ingest import ingest
    from lmpipe.ingest_config import IngestConfig

    root, summary = demo
    cfg = IngestConfig(sources=[{"uri": str(root / "raw" / "crawl" / "*.warc.gz"), "domain": "web"}])
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1))
    planted = {k.removeprefix("crawl_"): v for k, v in summary["planted"].items() if k.startswith("crawl_")}
    assert stats["kept"] == planted.pop("article") == SMALL.web_pages
    assert stats["by_reason"] == planted and stats["in"] == summary["docs"]["crawl"]
