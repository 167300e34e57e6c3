"""Filter rules on hand-built texts with hand-computed values, and the score -> select stages on the demo."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from lmpipe.config import load_params
from lmpipe.filters import c4, encoding, fineweb, gopher, language, pii
from lmpipe.filters.config import FilterScoreConfig, FilterSelectConfig, RuleSet
from lmpipe.filters.decontam import EvalIndex
from lmpipe.filters.perplexity import KneserNeyLM
from lmpipe.filters.select import check
from lmpipe.filters.text import normalize_words, split_words
from lmpipe.filters.toxicity import HashedLogReg, WordList

STOP = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])


# --------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The cat's toy.", ["The", "cat", "'s", "toy", "."]),
        ("I don't know, can't say!", ["I", "do", "n't", "know", ",", "ca", "n't", "say", "!"]),
        ("(e.g. well-known) U.S. Mr. Smith.", ["(", "e.g.", "well", "-", "known", ")", "U.S.", "Mr.", "Smith", "."]),
        ("$5 costs 3.14 or 1,000 km...", ["$", "5", "costs", "3.14", "or", "1,000", "km", "..."]),
        ("see http://x.org/a?b=1 and/or 10km", ["see", "http://x.org/a?b=1", "and/or", "10", "km"]),
        ("banish'd cannot", ["banish'd", "can", "not"]),
    ],
)
def test_split_words_follows_english_affix_rules(text: str, expected: list[str]) -> None:
    assert split_words(text) == expected


# ------------------------------------------------------------------------------------------ gopher
def test_gopher_quality_hand_computed() -> None:
    text = "the cat and the dog sat with me...\n- # note\n- # end"
    words = split_words(text)
    # tokens: the cat and the dog sat with me ... - # note - # end  -> 15 tokens
    assert len(words) == 15
    s = gopher.quality_scores(text, words, STOP)
    non_symbol = ["the", "cat", "and", "the", "dog", "sat", "with", "me", "note", "end"]
    assert s["gq_words"] == len(non_symbol) == 10
    assert s["gq_mean_word_len"] == pytest.approx(sum(map(len, non_symbol)) / 10)  # 30 / 10
    assert s["gq_hash_ratio"] == pytest.approx(2 / 15)
    assert s["gq_ellipsis_ratio"] == pytest.approx(1 / 15)
    assert s["gq_bullet_lines"] == pytest.approx(2 / 3)
    assert s["gq_ellipsis_lines"] == pytest.approx(1 / 3)
    assert s["gq_alpha_words"] == pytest.approx(10 / 15)
    assert s["gq_stop_words"] == 3  # the, and, with


def test_gopher_repetition_hand_computed() -> None:
    text = "a b c\na b c\nx y"
    s = gopher.repetition_scores(text, split_words(text))
    assert s["gr_dup_line_frac"] == pytest.approx(1 / 3)
    assert s["gr_dup_line_char_frac"] == pytest.approx(5 / 15)
    assert s["gr_dup_para_frac"] == 0
    # most frequent 2-gram "a b" (3 chars) occurs twice
    assert s["gr_top_2gram_frac"] == pytest.approx(6 / 15)
    assert s["gr_dup_5gram_frac"] == 0

    text = "one two three four five one two three four five six"
    s = gopher.repetition_scores(text, split_words(text))
    assert len(text) == 51
    assert s["gr_dup_5gram_frac"] == pytest.approx(len("onetwothreefourfive") / 51)
    assert s["gr_dup_6gram_frac"] == 0

    text = "Same para.\n\nSame para.\n\nOther one."
    s = gopher.repetition_scores(text, split_words(text))
    assert s["gr_dup_para_frac"] == pytest.approx(1 / 3)
    assert s["gr_dup_para_char_frac"] == pytest.approx(10 / len(text))


def test_dup_ngram_scan_skips_past_each_repeat() -> None:
    words = ["x", "y", "x", "y", "x", "y"]  # 2-grams: xy yx xy(dup, skip 2) -> at index 4 "xy" dup again
    cum = [0, 1, 2, 3, 4, 5, 6]
    assert gopher.dup_ngram_chars(gopher.NGrams(words), cum, 2) == 4


# --------------------------------------------------------------------------------------------- c4
def test_c4_line_rules_and_sentences() -> None:
    text = "\n".join([
        "Short line.",  # < 3 words: dropped
        "This line has no end punctuation",  # dropped
        "Please enable JavaScript to view it.",  # javascript: dropped
        "We use cookies and a privacy policy here.",  # policy: dropped
        "First sentence here. Second one here! Third?",  # kept, 3 sentences
        "Another good line ends here.",  # kept, 1 sentence
    ])
    kept, flags = c4.clean_lines(text, c4.C4LineRules())
    assert kept == ["First sentence here. Second one here! Third?", "Another good line ends here."]
    assert flags == {"lorem": 0, "curly": 0}
    s = c4.scores(text, c4.C4LineRules())
    assert s["c4_sentences"] == 4
    assert s["c4_kept_line_frac"] == pytest.approx(2 / 6)
    assert c4.scores("Lorem ipsum dolor sit amet.", c4.C4LineRules())["c4_lorem_ipsum"] == 1
    assert c4.scores("Use a dict {a: 1} for this.", c4.C4LineRules())["c4_curly_bracket"] == 1
    assert c4.scores("code {a: 1} without a full stop", c4.C4LineRules())["c4_curly_bracket"] == 0


# ----------------------------------------------------------------------------------------- fineweb
def test_fineweb_hand_computed() -> None:
    text = "A short one.\nA short one.\nthis line is rather longer than thirty characters\n\nend"
    words = split_words(text)
    s = fineweb.scores(text, words, (".", "!", "?"), 30)
    assert s["fw_lines"] == 4
    assert s["fw_line_punct_ratio"] == pytest.approx(2 / 4)
    assert s["fw_short_line_ratio"] == pytest.approx(3 / 4)
    assert s["fw_char_dup_ratio"] == pytest.approx(12 / (len(text) - 4))
    assert s["fw_list_ratio"] == pytest.approx(4 / len(words))


# ---------------------------------------------------------------------------- encoding, pii, language
def test_mojibake_counts_misdecoded_sequences() -> None:
    good = "It\u2019s a caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9."
    bad = good.encode("utf-8").decode("latin-1")
    assert encoding.mojibake_count(good) == 0
    assert encoding.mojibake_count(bad) == 6  # ’ é — ï é é
    assert encoding.mojibake_count(good.encode("utf-8").decode("cp1252", errors="replace")) >= 4


def test_pii_counts_and_scrubs() -> None:
    text = "Mail jane.doe@example.com or call +1 415-555-0132; server 8.8.8.8, local 127.0.0.1, year 2024."
    assert dict(pii.find(text)) == {"email": 1, "phone": 1, "ip": 1}
    out, counts = pii.scrub(text, {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>"})
    assert out == "Mail <EMAIL> or call <PHONE>; server <IP>, local 127.0.0.1, year 2024."
    assert dict(counts) == {"email": 1, "phone": 1, "ip": 1}
    assert sum(pii.find("x = 12345678901 and 3.14159").values()) == 0


def test_language_id_offline() -> None:
    assert language.identify("The quick brown fox jumps over the lazy dog near the river bank.")[0] == "en"
    lang, prob = language.identify("Der schnelle braune Fuchs springt über den faulen Hund am Fluss.")
    assert lang == "de" and prob > 0.9


# -------------------------------------------------------------------------------------- toxicity
def test_wordlist_counts_words_and_phrases() -> None:
    wl = WordList(["idiot", "two girls"])
    words = normalize_words("You IDIOT! Two  girls, one idiot; idiotic is not listed.")
    assert wl.count(words) == 3


def test_wordlist_multiword_hyphenated_and_symbol_terms() -> None:
    wl = WordList(["2 girls 1 cup", "girls", "g-spot", "s&m", "\U0001f595"])
    text = "Search: 2 girls 1 cup. Two girls. The G-spot and S&M. \U0001f595\U0001f595 gspot"
    # the longest phrase wins (1 hit, not 2); "g-spot" and "s&m" match as their word sequences; the emoji,
    # which word normalisation drops, is counted in the raw text; "gspot" is not "g spot"
    assert wl.count_text(text) == 1 + 1 + 1 + 1 + 2


def test_default_wordlist_is_the_shipped_ldnoobw_list_with_its_license(shared_data) -> None:  # noqa: ANN001
    from lmpipe.filters.toxicity import DEFAULT_WORDLIST

    shipped = DEFAULT_WORDLIST.read_bytes()
    assert shipped == (shared_data / "wordlists" / "ldnoobw-en.txt").read_bytes()  # byte-for-byte, unmodified
    lic = (DEFAULT_WORDLIST.parent / "LICENSE.txt").read_text()
    assert "CC BY 4.0" in lic and "Shutterstock" in lic and "creativecommons.org/licenses/by/4.0" in lic
    wl = WordList.load()
    lines = [ln for ln in shipped.decode().splitlines() if ln.strip()]
    assert len(wl.phrases) + len(wl.symbols) == len(lines) == 403
    assert sum(len(p) > 1 for p in wl.phrases) > 100  # multi-word terms kept as phrases
    assert wl.count_text("A perfectly ordinary sentence about tea.") == 0
    # "two girls one cup" and "2 girls 1 cup" are listed phrases (punctuation between words does not matter)
    assert wl.count_text("Two girls, one cup of tea, and a nude painting in the style of 2 Girls 1 Cup.") == 3


def test_filter_and_eval_do_not_take_their_list_from_the_demo(project_root: Path) -> None:
    """The circularity of issue 10: no filter or evaluation module reads the demo package."""
    import ast

    from lmpipe.demo.noise import INSULTS

    for pkg in ("filters", "evaluation"):
        for f in (project_root / "src" / "lmpipe" / pkg).glob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not [n for n in names if n.startswith("lmpipe.demo")], f"{f} imports the demo: {names}"
    # and the demo's classifier training vocabulary is disjoint from the filter's list
    assert WordList.load().count(INSULTS) == 0


def test_wordlist_param_points_at_another_file(tmp_path: Path) -> None:
    from lmpipe.filters.score import Scorer

    (tmp_path / "mine.txt").write_text("# a comment\nwidget\nblue moon\n")
    cfg = FilterScoreConfig(toxicity={"wordlist": str(tmp_path / "mine.txt")})
    s = Scorer(cfg).score("Once in a blue moon a widget, a widget: the rest is fine words here.")
    assert s["tox_words"] == 3 and s["tox_word_frac"] == pytest.approx(3 / 15)
    assert Scorer(FilterScoreConfig()).score("Once in a blue moon a widget.")["tox_words"] == 0


def test_wordlist_file(shared_data) -> None:  # noqa: ANN001
    wl = WordList.from_file(shared_data / "wordlists" / "ldnoobw-en.txt")
    assert len(wl.phrases) > 300
    assert wl.count(normalize_words("a perfectly ordinary sentence about tea")) == 0


def test_hashed_logreg_learns_toxic_vs_clean() -> None:
    insults = ["oaf", "buffoon", "nitwit", "dimwit", "clod"]  # this test's own vocabulary
    rng = random.Random(0)
    topics = ["river", "bridge", "garden", "library", "museum", "harbour", "market", "valley", "orchard"]

    def clean() -> str:
        return f"The {rng.choice(topics)} near the {rng.choice(topics)} was quiet and the visitors enjoyed it."

    def toxic() -> str:
        return f"You {rng.choice(insults)}, the {rng.choice(topics)} is {rng.choice(insults)} like you."

    train = [(clean(), 0) for _ in range(60)] + [(toxic(), 1) for _ in range(60)]
    clf = HashedLogReg(buckets=1 << 12).fit([t for t, _ in train], [y for _, y in train], epochs=100)
    test = [(clean(), 0) for _ in range(20)] + [(toxic(), 1) for _ in range(20)]
    correct = sum((clf.predict(t) > 0.5) == bool(y) for t, y in test)
    assert correct >= 38


# ------------------------------------------------------------------------------------ perplexity
def test_kneser_ney_is_a_distribution_and_prefers_in_domain_text() -> None:
    docs = [s.split() for s in ["the cat sat on the mat", "the dog sat on the rug", "a cat saw the dog"]]
    lm = KneserNeyLM(order=3).fit(docs)
    for ctx in [("<s>", "<s>"), ("the", "cat"), ("sat", "on"), ("zebra", "the")]:
        total = sum(lm.prob(ctx, w) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9)
    assert lm.perplexity(["the", "cat", "sat", "on", "the", "rug"]) < lm.perplexity(["rug", "the", "on", "sat", "cat", "the"])
    assert math.isfinite(lm.perplexity(["unseen", "words"]))


# ---------------------------------------------------------------------------------- decontamination
def test_decontamination_matches_items_not_answers() -> None:
    idx = EvalIndex(ngram=13, min_ngram=8)
    idx.add("q1", "In which city is the Amber Lantern Guild based? Velmouth")
    idx.add("q2", "Who founded it? Ana")  # 5 words: too short to match anything
    long_item = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    idx.add("q3", long_item)
    article = normalize_words("The Amber Lantern Guild is based in the city of Velmouth. Ana founded it.")
    assert idx.match(article) == (0, "")
    leak = normalize_words("Quiz: in which city is the Amber Lantern Guild based? Velmouth, of course.")
    assert idx.match(leak) == (1, "q1")
    assert idx.match(normalize_words("x one two three four five six seven eight nine ten eleven twelve thirteen y"))[1] == "q3"
    assert idx.match(normalize_words("two three four five six seven eight nine ten eleven twelve")) == (0, "")


def test_decontamination_uses_the_configured_n_at_its_boundary(tmp_path: Path) -> None:
    """n = 7 (not the default 13), min_ngram = 4: a document sharing 6 consecutive words of an item is kept
    clean, 7 words is one shared 7-gram, 8 words two; items shorter than n match whole from min_ngram words."""
    from lmpipe.documents import Document, ShardWriter
    from lmpipe.filters.config import DecontamScoreConfig, EvalFile, PerplexityScoreConfig
    from lmpipe.filters.score import build_models, score_unit

    item = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
            "lima"]
    rows = [{"id": "long", "question": " ".join(item)}, {"id": "four", "question": "oscar papa quebec romeo"},
            {"id": "three", "question": "sierra tango uniform"}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = FilterScoreConfig(
        perplexity=PerplexityScoreConfig(reference_domain=None),
        decontam=DecontamScoreConfig(ngram=7, min_ngram=4, eval_files=[EvalFile(path=str(tmp_path / "qa.jsonl"))]),
    )
    job, info = build_models(cfg, tmp_path / "none", tmp_path / "models")

    def doc(words: list[str]) -> str:
        return "Zulu yankee, " + " ".join(words) + ". Xray whiskey!"

    texts = {
        "n-1": doc(item[3:9]),
        "n": doc(item[3:10]),
        "n+1": doc(item[3:11]),
        "whole-4": doc(["oscar", "papa", "quebec", "romeo"]),
        "part-of-4": doc(["oscar", "papa", "quebec"]),
        "short-3": doc(["sierra", "tango", "uniform"]),
    }
    with ShardWriter(tmp_path / "docs", "part") as w:
        for name, text in texts.items():
            w.write(Document(name, text, "web", "test"))
    scored = {d.id: d.meta["scores"] for d in score_unit(str(tmp_path / "docs" / w.shards[0].path), job)}
    got = {k: (s["decontam_hits"], s["decontam_item"]) for k, s in scored.items()}
    assert got == {
        "n-1": (0, ""),
        "n": (1, "qa:long"),
        "n+1": (2, "qa:long"),
        "whole-4": (1, "qa:four"),
        "part-of-4": (0, ""),
        "short-3": (0, ""),
    }
    assert info["decontam"] == {"items": 2, "ngrams": 12 - 7 + 1 + 1}  # 6 seven-grams + one whole 4-word item


# --------------------------------------------------------------------------------------- selection
def test_check_reports_reason_and_measured_value() -> None:
    s = {"gr_dup_para_frac": 0, "gr_dup_para_char_frac": 0, "gr_dup_line_frac": 0.41, "gr_dup_line_char_frac": 0.1}
    rules = RuleSet(encoding=None, language=None, gopher_quality=None, c4=None, fineweb=None, toxicity=None)
    rules.gopher_repetition.max_top_ngram_frac.clear()
    rules.gopher_repetition.max_dup_ngram_frac.clear()
    fails = check(s, rules)
    assert [(f.family, f.detail) for f in fails] == [("gopher_repetition", "dup_line_frac=0.41 > 0.3")]
    assert check({**s, "gr_dup_line_frac": 0.3}, rules) == []
    off = RuleSet(encoding=None, language=None, gopher_quality=None, gopher_repetition=None, c4=None, fineweb=None,
                  toxicity=None, decontamination=False)
    assert check({**s, "decontam_hits": 2, "decontam_item": "q"}, off) == []


def test_params_split_score_and_select() -> None:
    p = load_params()
    assert isinstance(p.filter.score, FilterScoreConfig) and isinstance(p.filter.select, FilterSelectConfig)
    assert p.filter.select.rules_for("code").gopher_quality is None
    assert p.filter.select.rules_for("web").fineweb is not None


# ------------------------------------------------------------------------------- demo end to end
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):  # noqa: ANN201
    from lmpipe.demo.config import DemoConfig
    from lmpipe.demo.corpus import generate
    from lmpipe.documents import iter_documents
    from lmpipe.executors import LocalExecutor
    from lmpipe.filters.score import score_dataset
    from lmpipe.filters.select import select_dataset
    from lmpipe.ingest import ingest
    from lmpipe.ingest_config import IngestConfig, SourceConfig

    tmp = tmp_path_factory.mktemp("filters")
    generate(DemoConfig(prose_docs=80, code_docs=40, math_docs=40, fiction_entities=8, noise_fraction=0.3),
             7, tmp / "raw", tmp / "eval")
    sources = [
        SourceConfig(uri=str(tmp / "raw/prose.jsonl.gz"), domain="prose"),
        SourceConfig(uri=str(tmp / "raw/code.parquet"), domain="code"),
        SourceConfig(uri=str(tmp / "raw/math.jsonl"), domain="math"),
        SourceConfig(uri=str(tmp / "raw/fiction/*.md"), domain="fiction"),
        SourceConfig(uri=str(tmp / "raw/web/*"), domain="web"),
    ]
    ex = LocalExecutor(1)
    ingest(IngestConfig(sources=sources, docs_per_shard=100), tmp / "ingest", tmp / "ingest_rej", ex)
    p = load_params()
    score_cfg = p.filter.score.model_copy(deep=True)
    score_cfg.quality.enabled = False  # the learned rater needs the label/rater stages (tests/test_quality.py)
    score_cfg.decontam.eval_files[0].path = str(tmp / "eval/fiction_qa.jsonl")
    for f in score_cfg.toxicity.train_files:  # the demo's labelled set, from this test's own demo
        f.path = str(tmp / "raw" / Path(f.path).relative_to("data/raw"))
    # a document that quotes an eval question must be dropped naming that question
    q = json.loads((tmp / "eval/fiction_qa.jsonl").read_text().splitlines()[0])
    from lmpipe.documents import Document, ShardWriter, read_manifest, write_manifest

    leak_dir = tmp / "ingest_plus"
    with ShardWriter(leak_dir, "part-leak") as w:
        w.write(Document("leak-1", f"Trivia night.\n\n{q['question']} {q['answer']}. " + "Lovely evening. " * 20,
                         "web", "test"))
        for d in iter_documents(tmp / "ingest"):
            w.write(d)
    write_manifest(leak_dir, w.shards)
    assert read_manifest(leak_dir)["docs"] > 100
    score_dataset(score_cfg, leak_dir, tmp / "scored", tmp / "scored_rej", tmp / "models", ex)
    stats = select_dataset(p.filter.select, p.filter.score.c4, tmp / "scored", tmp / "kept", tmp / "rej",
                           tmp / "plots", ex)
    return tmp, stats, q


@pytest.mark.e2e
def test_demo_noise_removed_for_the_right_reasons(demo_run) -> None:  # noqa: ANN001
    from lmpipe.documents import iter_batches, iter_documents

    tmp, stats, q = demo_run
    assert stats["in"] == stats["kept"] + stats["rejected"]
    kept = list(iter_documents(tmp / "kept"))
    assert not [d.meta.get("noise") for d in kept if d.domain == "web"], "a noisy web doc survived"
    clean = [d for d in kept if not d.meta.get("noise")]
    by_domain = {dom: sum(d.domain == dom for d in clean) for dom in ("prose", "code", "math", "fiction")}
    assert by_domain["code"] == 40 and by_domain["math"] == 40 and by_domain["fiction"] >= 8
    assert by_domain["prose"] >= 0.9 * 80
    expected = {"boilerplate": {"gopher_repetition", "fineweb", "c4", "gopher_quality"},
                "spam": {"gopher_repetition"}, "toxic": {"toxicity"}, "short": {"gopher_quality"},
                "long": {"gopher_repetition"}, "mojibake": {"encoding"}}
    rows = [r for b in iter_batches(tmp / "rej") for r in b.to_pylist()]
    seen = set()
    for r in rows:
        meta = json.loads(r["meta"])
        kind = meta.get("noise")
        if kind in expected and (kind != "mojibake" or not r["text"].isascii()):
            families = {f.split("/")[0] for f in meta["filter_failed"]}
            assert families & expected[kind], (kind, r["reason"], r["detail"])
            seen.add(kind)
    assert seen == set(expected)
    leak = [r for r in rows if r["id"] == "leak-1"]
    assert leak and leak[0]["reason"] == "decontamination" and q["id"] in leak[0]["detail"]
    assert (tmp / "plots" / "gq_words.png").exists() and (tmp / "plots" / "toxicity_sweep.png").exists()
    assert stats["rule_hits"]["toxicity/tox_word_frac"] >= 1


# ------------------------------------------------------------------------- agreement with datatrove
def test_decisions_agree_with_datatrove_on_real_text(shared_data) -> None:  # noqa: ANN001
    """Keep/drop per rule set equals datatrove's (the public reference) on real prose, math and code."""
    dt = pytest.importorskip("datatrove.pipeline.filters", reason="datatrove is a bench-only dependency")
    pytest.importorskip("spacy", reason="datatrove's word splitting needs spaCy (bench group)")
    from datatrove.data import Document as DTDoc

    from lmpipe.filters.score import Scorer

    texts = [p for p in (shared_data / "wikitext-2" / "valid.txt").read_text().split("\n \n") if p.strip()][:60]
    with open(shared_data / "domains" / "math" / "gsm8k_train.jsonl") as f:
        texts += [json.loads(next(f))["text"] for _ in range(40)]
    with open(shared_data / "domains" / "code" / "sympy_python.jsonl") as f:
        texts += [json.loads(next(f))["text"][:4000] for _ in range(10)]
    ref = {"gopher_repetition": dt.GopherRepetitionFilter(), "gopher_quality": dt.GopherQualityFilter(),
           "c4": dt.C4QualityFilter(), "fineweb": dt.FineWebQualityFilter()}
    scorer = Scorer(FilterScoreConfig())
    rules = RuleSet(encoding=None, language=None, toxicity=None, decontamination=False)
    differ: dict[str, list[int]] = {name: [] for name in ref}
    kept: dict[str, int] = dict.fromkeys(ref, 0)
    for i, text in enumerate(texts):
        failed = {f.family for f in check(scorer.heuristics(text, split_words(text)), rules)}
        for name, flt in ref.items():
            res = flt.filter(DTDoc(text=text, id=str(i)))
            theirs = res is True or (isinstance(res, tuple) and res[0])
            kept[name] += theirs
            if theirs != (name not in failed):
                differ[name].append(i)
    for name in ref:  # each rule family on its own: one family's agreement cannot hide another's
        assert len(differ[name]) <= len(texts) // 100, f"{name}: differs from datatrove on docs {differ[name]}"
        assert 0 < kept[name] < len(texts), f"{name}: datatrove keeps {kept[name]}/{len(texts)}: nothing compared"
