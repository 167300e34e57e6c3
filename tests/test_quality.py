"""Learned quality raters: rubric parsing, the label stage against real LLM servers (a fault-injecting
OpenAI-compatible one, the embedded tiny model with kill -9), the rater on a planted signal, scoring and
selection by the learned scores."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmpipe.documents import (
    Document,
    ShardWriter,
    iter_batches,
    iter_documents,
    read_manifest,
    write_manifest,
)
from lmpipe.executors import LocalExecutor
from lmpipe.filters.config import RuleSet
from lmpipe.llm.config import LLMConfig
from lmpipe.llm.testing import FaultServer, build_tiny_model
from lmpipe.quality.config import LabelConfig, QualityRules, QualityScoreConfig, RaterConfig
from lmpipe.quality.label import LabelJob, label_documents
from lmpipe.quality.rater import HashedRater, agreement, combine, train_rater
from lmpipe.quality.rubric import RubricError, load_prompt, parse_rating
from tests.conftest import stage_cmd

ROOT = Path(__file__).resolve().parent.parent
DIMS = ["educational_value", "coherence", "reasoning", "professionalism"]


def write_docs(directory: Path, docs: list[Document], per_shard: int) -> None:
    with ShardWriter(directory, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)


def rows(path: Path) -> list[dict]:
    return [r for b in iter_batches(path) for r in b.to_pylist()]


# ------------------------------------------------------------------------------------------- rubric
def test_rubric_parsing_repairs_what_it_can_and_names_what_it_cannot() -> None:
    good = {"educational_value": 4, "coherence": 3, "reasoning": 0, "professionalism": 5}
    assert parse_rating(json.dumps(good), DIMS) == good
    assert parse_rating("```json\n" + json.dumps(good) + "\n```", DIMS) == good  # fenced
    assert (
        parse_rating(
            '{"Educational_Value": "4", "coherence": 3.0, "reasoning": 0, "professionalism": 5,}', DIMS
        )
        == good
    )  # key case, digit string, integral float, trailing comma
    cases = {
        "This text is quite good, I would say 4.": "no_json",
        "[4, 3, 0, 5]": "not_object",
        '{"educational_value": 4, "coherence": 3': "missing_dimension",  # cut off by max_tokens
        '{"educational_value": 4, "coherence": "4/5", "reasoning": 0, "professionalism": 5}': "bad_score",
        '{"educational_value": 4.5, "coherence": 3, "reasoning": 0, "professionalism": 5}': "bad_score",
        '{"educational_value": 7, "coherence": 3, "reasoning": 0, "professionalism": 5}': "out_of_range",
        '{"educational_value": true, "coherence": 3, "reasoning": 0, "professionalism": 5}': "bad_score",
        "": "no_json",
    }
    for reply, reason in cases.items():
        with pytest.raises(RubricError) as e:
            parse_rating(reply, DIMS)
        assert e.value.reason == reason, reply


def test_prompt_is_an_editable_template(tmp_path: Path) -> None:
    packaged = load_prompt(DIMS)
    assert "{document}" in packaged and all(f"{d}:" in packaged for d in DIMS)
    assert (
        '{"educational_value": <0-5>, "coherence": <0-5>' in packaged
    )  # the reply's shape, no values to copy
    (tmp_path / "dim_coherence.txt").write_text("coherence: MY OWN RUBRIC")
    mine = load_prompt(DIMS, str(tmp_path))
    assert "MY OWN RUBRIC" in mine and "educational_value:" in mine  # overridden file by file
    with pytest.raises(FileNotFoundError, match="dim_humour"):
        load_prompt(["humour"])


# ------------------------------------------------------------------------------- label stage (HTTP)
PLANTED = {  # document id -> the reply the server gives for it
    "d0": '{"educational_value": 5, "coherence": 4, "reasoning": 3, "professionalism": 2}',
    "d1": 'Sure! ```json\n{"educational_value": 1, "coherence": 1, "reasoning": 0, "professionalism": 1,}\n```',
    "d2": "I rate this document highly.",
    "d3": '{"educational_value": 9, "coherence": 4, "reasoning": 3, "professionalism": 2}',
    "d4": '{"educational_value": 2, "coherence": 2}',
    "d5": "HTTP 500",  # the server fails every attempt
    "d6": '{"educational_value": 0, "coherence": 5, "reasoning": 5, "professionalism": 0}',
}


def _doc_of(req: dict) -> str:
    return re.search(r"\bdoc-id (d\d)\b", req["messages"][-1]["content"]).group(1)


def test_label_stage_keeps_parsed_labels_and_quarantines_the_rest(tmp_path: Path) -> None:
    docs = [
        Document(
            i, f"Article doc-id {i}. " + "Plain words about trees. " * 5, "prose" if k % 2 else "web", "t"
        )
        for k, i in enumerate(PLANTED)
    ]
    write_docs(tmp_path / "in", docs, per_shard=3)

    def script(req: dict, attempt: int) -> str:
        return "500" if _doc_of(req) == "d5" else "ok"

    with FaultServer(script, reply=lambda req: PLANTED[_doc_of(req)]) as server:
        llm = LLMConfig(
            backend="http",
            base_url=server.url,
            model="m",
            max_retries=1,
            backoff_base_s=0.01,
            cache=str(tmp_path / "cache.sqlite"),
            api_key_env=None,
        )
        job = LabelJob(llm=llm, label=LabelConfig(per_domain=10, json_mode="off"), seed=3)
        stats = label_documents(job, tmp_path / "in", tmp_path / "out", tmp_path / "rej", LocalExecutor(1))
        labelled = {d.id: d.meta["labels"] for d in iter_documents(tmp_path / "out")}
        quarantined = {r["id"]: (r["reason"], r["raw"]) for r in rows(tmp_path / "rej")}
        assert labelled == {
            "d0": {"educational_value": 5, "coherence": 4, "reasoning": 3, "professionalism": 2},
            "d1": {"educational_value": 1, "coherence": 1, "reasoning": 0, "professionalism": 1},
            "d6": {"educational_value": 0, "coherence": 5, "reasoning": 5, "professionalism": 0},
        }
        assert {k: v[0] for k, v in quarantined.items()} == {
            "d2": "no_json",
            "d3": "out_of_range",
            "d4": "missing_dimension",
            "d5": "llm_http_500",
        }
        assert quarantined["d2"][1] == PLANTED["d2"].encode()  # the reply is kept for inspection
        assert stats["in"] == stats["kept"] + stats["rejected"] == 7
        assert (stats["labelled"], stats["malformed"], stats["llm_failures"]) == (3, 3, 1)
        assert stats["llm"]["requests"] == 7 and stats["llm"]["attempts"] == 8  # d5: one retry
        assert stats["llm"]["completion_tokens"] > 0 and stats["cost_per_label"]["prompt_tokens"] > 0
        assert stats["label_histogram"]["educational_value"][5] == 1
        # a rerun in a fresh output: every good answer comes from the cache, only the failure is re-sent
        before = server.requests
        again = label_documents(job, tmp_path / "in", tmp_path / "out2", tmp_path / "rej2", LocalExecutor(1))
        assert again["llm"]["cache_hits"] == 6 and server.requests - before == 2
        assert read_manifest(tmp_path / "out2")["sha256"] == read_manifest(tmp_path / "out")["sha256"]


def test_sample_is_per_domain_and_seeded(tmp_path: Path) -> None:
    from lmpipe.quality.label import plan_units, sample_ids

    docs = [Document(f"{dom}-{i}", "x", dom, "t") for dom in ("a", "b", "c") for i in range(10)]
    write_docs(tmp_path / "one", docs, per_shard=100)
    write_docs(tmp_path / "many", docs, per_shard=4)
    cfg = LabelConfig(per_domain=3, domains=["a", "b"])
    chosen = sample_ids(tmp_path / "one", cfg, seed=1)
    assert len(chosen) == 6 and {c.split("-")[0] for c in chosen} == {"a", "b"}
    assert sample_ids(tmp_path / "many", cfg, seed=1) == chosen  # independent of sharding
    assert sample_ids(tmp_path / "one", cfg, seed=2) != chosen
    units = plan_units(tmp_path / "many", cfg.model_copy(update={"docs_per_unit": 4}), seed=1)
    assert [sum(len(ids) for _, ids in unit) for _, unit in units] == [4, 2]  # full units across shards
    assert {i for _, unit in units for _, ids in unit for i in ids} == chosen
    # three workers and a sample of 6: three units of 2, each a share for one worker
    units = plan_units(tmp_path / "many", cfg.model_copy(update={"workers": 3}), seed=1)
    assert [sum(len(ids) for _, ids in unit) for _, unit in units] == [2, 2, 2]
    assert {i for _, unit in units for _, ids in unit for i in ids} == chosen


# --------------------------------------------------------------------------- label stage: kill -9
def _params(path: Path, tiny: Path, cache: Path) -> Path:
    p = {
        "run": {"seed": 5},
        "ingest": {"sources": [{"uri": "unused", "domain": "x"}]},
        "llm": {
            "backend": "embedded",
            "model": str(tiny),
            "threads": 1,
            "batch_size": 4,
            "cache": str(cache),
        },
        "quality": {"label": {"per_domain": 100, "max_tokens": 80, "doc_chars": 120, "docs_per_unit": 1}},
    }
    path.write_text(yaml.safe_dump(p))
    return path


def _digest(out: Path) -> tuple[str, str]:
    return read_manifest(out / "docs")["sha256"], read_manifest(out / "rejected")["sha256"]


@pytest.mark.e2e
def test_label_kill_9_then_rerun_gives_identical_labels(tmp_path: Path) -> None:
    tiny = build_tiny_model(tmp_path / "tiny")
    docs = [Document(f"d{i:02d}", f"Notes {i} on soil, rain and crops. " * 3, "prose", "t") for i in range(6)]
    write_docs(tmp_path / "in", docs, per_shard=1)  # 6 units
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}

    def cmd(out: Path, params: Path) -> list[str]:
        return stage_cmd(
            "label", params, out / "m.json", docs=tmp_path / "in", out=out / "docs", rejected=out / "rejected"
        )

    ref = tmp_path / "ref"  # the uninterrupted reference runs in-process (one subprocess start less)
    from lmpipe.config import load_params

    p = load_params(_params(tmp_path / "a.yaml", tiny, tmp_path / "a.sqlite"))
    m_ref = label_documents(
        LabelJob(llm=p.llm, label=p.quality.label, seed=p.quality.label.seed),
        tmp_path / "in",
        ref / "docs",
        ref / "rejected",
        LocalExecutor(1),
    )
    out, params = tmp_path / "killed", _params(tmp_path / "b.yaml", tiny, tmp_path / "b.sqlite")
    proc = subprocess.Popen(
        cmd(out, params), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = out / ".state" / "docs"
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline and len(list(state.glob("*.json"))) < 1 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(state.glob("*.json")))
    assert 1 <= done < 6, f"kill landed after {done}/6 units"
    subprocess.run(cmd(out, params), cwd=ROOT, env=env, check=True, capture_output=True)
    assert _digest(out) == _digest(ref)
    m = json.loads((out / "m.json").read_text())
    assert m["units_reused"] >= done and m["llm_this_run"]["requests"] < m_ref["llm"]["requests"]
    assert m["labelled"] + m["malformed"] == 6 and m["labelled"] > 0


# ------------------------------------------------------------------------------------------ rater
SIGNAL = ["theorem", "proof", "lemma", "derivation", "corollary"]


def planted(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Documents of random filler words; educational_value = how many distinct SIGNAL words appear (0..5),
    coherence = pure noise (nothing to learn)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    texts, y = [], []
    for _ in range(n):
        k = rng.randrange(6)
        words = [rng.choice(vocab) for _ in range(120)]
        for s in rng.sample(SIGNAL, k):
            words[rng.randrange(len(words))] = s
        texts.append(" ".join(words))
        y.append([k, rng.randrange(6)])
    return texts, np.asarray(y, dtype=float)


def test_rater_reproduces_a_planted_signal_on_held_out_data(tmp_path: Path) -> None:
    texts, y = planted(700, seed=1)
    rater = HashedRater(["edu", "noise"], buckets=1 << 16, ngrams=2).fit(texts[:500], y[:500], alpha=0.1)
    pred = rater.predict(texts[500:])
    edu, noise = agreement(pred[:, 0], y[500:, 0], 3.0), agreement(pred[:, 1], y[500:, 1], 3.0)
    assert edu["spearman"] > 0.85 and edu["f1"] > 0.6, edu
    assert abs(noise["spearman"]) < 0.25, noise  # no signal, no agreement: the metric is not vacuous
    rater.save(tmp_path / "r.npz")
    np.testing.assert_array_equal(HashedRater.load(tmp_path / "r.npz").predict(texts[500:]), pred)
    assert ((pred >= 0) & (pred <= 5)).all()


def test_agreement_hand_computed() -> None:
    a = agreement(np.array([1.0, 2.0, 3.5, 4.0]), np.array([0, 3, 4, 2]), threshold=3.0)
    # ranks 1,2,3,4 vs 1,3,4,2: d^2 = 0+1+1+4 = 6 -> 1 - 6*6/(4*15) = 0.4; tp=1 (3.5/4), fp=1 (4.0/2), fn=1 (2.0/3)
    assert a["spearman"] == pytest.approx(0.4) and a["f1"] == pytest.approx(0.5)
    assert a["mae"] == pytest.approx((1 + 1 + 0.5 + 2) / 4) and a["positives"] == 2
    assert (
        agreement(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 2]), 3.0)["spearman"] is None
    )  # constant rater


def test_rater_stage_trains_on_labels_and_reports_held_out_agreement(tmp_path: Path) -> None:
    texts, y = planted(400, seed=2)
    docs = [
        Document(f"d{i}", t, "web", "t", {"labels": {"educational_value": int(r[0]), "coherence": int(r[1])}})
        for i, (t, r) in enumerate(zip(texts, y, strict=True))
    ]
    write_docs(tmp_path / "labels", docs, per_shard=150)
    stats = train_rater(
        tmp_path / "labels",
        ["educational_value", "coherence"],
        RaterConfig(buckets=1 << 16, heldout_fraction=0.25),
        seed=0,
        out_dir=tmp_path / "model",
    )
    assert stats["train"] + stats["heldout"] == 400 and 60 < stats["heldout"] < 140
    assert stats["agreement"]["educational_value"]["spearman"] > 0.8
    assert json.loads((tmp_path / "model" / "rater.json").read_text())["heldout"] == stats["heldout"]
    assert HashedRater.load(tmp_path / "model" / "rater.npz").dimensions == ["educational_value", "coherence"]


# ------------------------------------------------------------------------------- score and filter
def test_combined_score_weights() -> None:
    assert combine({"a": 1.0, "b": 4.0}, {"a": 1.0, "b": 3.0}) == pytest.approx((1 + 12) / 4)
    assert combine({"a": 1.0, "b": 4.0}, {}) == pytest.approx(2.5)  # equal weights
    assert combine({"a": 1.0, "b": 4.0}, {"b": 2.0}) == pytest.approx(4.0)  # unnamed dimensions weigh 0
    with pytest.raises(ValueError):
        QualityScoreConfig(weights={"a": -1.0})


def test_score_stores_the_rater_scores_and_their_weighted_combination(tmp_path: Path) -> None:
    from lmpipe.filters.config import FilterScoreConfig
    from lmpipe.filters.score import score_dataset

    texts, y = planted(260, seed=3)
    rater = HashedRater(["edu", "noise"], buckets=1 << 16).fit(texts[:200], y[:200], alpha=0.1)
    (tmp_path / "rater").mkdir()
    rater.save(tmp_path / "rater" / "rater.npz")
    docs = [Document(f"d{i}", t, "web", "t") for i, t in enumerate(texts[200:])]
    write_docs(tmp_path / "in", docs, per_shard=25)
    cfg = FilterScoreConfig(
        quality={"enabled": True, "weights": {"edu": 3.0, "noise": 1.0}},
        perplexity={"reference_domain": None},
        decontam={"eval_files": []},
    )
    stats = score_dataset(
        cfg,
        tmp_path / "in",
        tmp_path / "scored",
        tmp_path / "srej",
        tmp_path / "models",
        LocalExecutor(1),
        tmp_path / "rater",
    )
    assert stats["models"]["quality_rater"]["dimensions"] == ["edu", "noise"]
    scored = {d.id: d.meta["scores"] for d in iter_documents(tmp_path / "scored")}
    for d, row in zip(docs, rater.predict([d.text for d in docs]), strict=True):
        s = scored[d.id]
        assert s["q_edu"] == pytest.approx(row[0], abs=1e-4) and s["q_noise"] == pytest.approx(
            row[1], abs=1e-4
        )
        assert s["quality"] == pytest.approx((3 * row[0] + row[1]) / 4, abs=1e-3)
        assert "gq_words" in s  # every other measurement is still there


def test_top_percent_cutoff_keeps_ties() -> None:
    from lmpipe.filters.quality import top_percent_cutoff

    assert top_percent_cutoff([1, 2, 2, 3], 50) == 2  # best 2 of 4 -> cutoff 2; both 2s pass a >= check
    assert top_percent_cutoff([0.5, 4.0, 2.5], 10) == 4.0  # at least one document is kept
    assert top_percent_cutoff([0.5, 4.0, 2.5], 100) == 0.5


def test_filter_selects_by_threshold_and_top_percent_per_domain(tmp_path: Path) -> None:
    from lmpipe.filters.config import C4ScoreConfig, FilterSelectConfig
    from lmpipe.filters.select import select_dataset

    web = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    math = [1.99, 2.0, 2.01]
    docs = [
        Document(f"web{i}", "w", "web", "t", {"scores": {"quality": q, "q_edu": q}})
        for i, q in enumerate(web)
    ]
    docs += [
        Document(f"math{i}", "m", "math", "t", {"scores": {"quality": q, "q_edu": q}})
        for i, q in enumerate(math)
    ]
    docs.append(Document("code0", "c", "code", "t", {"scores": {"quality": 0.0, "q_edu": 0.0}}))
    write_docs(tmp_path / "scored", docs, per_shard=4)
    off = dict.fromkeys(
        (
            "encoding",
            "language",
            "gopher_quality",
            "gopher_repetition",
            "c4",
            "fineweb",
            "toxicity",
            "perplexity",
        )
    )
    rules = lambda q: RuleSet(**off, quality=q, decontamination=False, pii_scrub=False)  # noqa: E731
    sel = FilterSelectConfig(
        default=rules(QualityRules(top_percent=30)),
        domains={"math": rules(QualityRules(min_quality=2.0)), "code": rules(QualityRules())},
    )
    stats = select_dataset(
        sel,
        C4ScoreConfig(),
        tmp_path / "scored",
        tmp_path / "kept",
        tmp_path / "rej",
        tmp_path / "plots",
        LocalExecutor(1),
    )
    kept = sorted(d.id for d in iter_documents(tmp_path / "kept"))
    assert kept == [
        "code0",
        "math1",
        "math2",
        "web7",
        "web8",
        "web9",
    ]  # best 3 of 10 web; math >= 2.0; code: no rule
    assert stats["quality_cutoffs"] == {"web": 3.5}
    reasons = {r["id"]: (r["reason"], r["detail"]) for r in rows(tmp_path / "rej")}
    assert stats["in"] == len(kept) + len(reasons) == 14
    assert reasons["math0"] == ("quality", "quality=1.99 < 2")
    assert reasons["web6"] == ("quality", "quality_top_percent=3 < 3.5")
    assert (tmp_path / "plots" / "quality.png").exists() and (tmp_path / "plots" / "q_edu.png").exists()


def test_score_without_a_rater_is_a_clear_error(tmp_path: Path) -> None:
    from lmpipe.filters.config import FilterScoreConfig
    from lmpipe.filters.score import build_models

    cfg = FilterScoreConfig(quality={"enabled": True}, perplexity={"reference_domain": None})
    with pytest.raises(FileNotFoundError, match="run stages `label` and `rater`"):
        build_models(cfg, tmp_path, tmp_path / "m", tmp_path / "no-rater")
