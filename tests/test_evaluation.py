"""Evaluation metrics against independent expectations: HF's own loss, hand-computed arithmetic, unbatched
generation, and a constructed forgetting case with real training steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lmpipe.config import ConfigError, parse_params  # noqa: E402
from lmpipe.contract import run_stage  # noqa: E402
from lmpipe.documents import Document, ShardWriter, write_manifest  # noqa: E402
from lmpipe.evaluation.config import EvaluateConfig, HeldoutConfig, QAConfig, ToxicityConfig  # noqa: E402
from lmpipe.evaluation.forgetting import forgetting  # noqa: E402
from lmpipe.evaluation.heldout import heldout_metrics  # noqa: E402
from lmpipe.evaluation.lm import LM, ModelDirError, Span, span_logprobs, windows  # noqa: E402
from lmpipe.evaluation.qa import (  # noqa: E402  # noqa: E402
    QAItem,
    choose,
    exact_match,
    load_qa,
    multiple_choice,
    normalise_answer,
    prompt,
)
from lmpipe.evaluation.run import evaluate_models  # noqa: E402
from lmpipe.evaluation.toxicity import WordListScorer, resolve_scorer, rtp_summary, toxicity_eval  # noqa: E402  # noqa: E402
from lmpipe.tiny import build_tiny_model  # noqa: E402
from stages.registry import by_name  # noqa: E402

CORPUS = {
    "prose": ["The quick brown fox jumps over the lazy dog near the river bank.",
              "A café in Zürich served naïve crème brûlée — très bien!",
              "Rivers flow to the sea, and the sea returns as rain over the hills."],
    "code": ["def add(x, y):\n    return x + y\n", "for i in range(10):\n    print(i * i)\n"],
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    texts = [t for ts in CORPUS.values() for t in ts] * 3
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), texts, vocab_size=320, context=64, seed=7)


@pytest.fixture(scope="module")
def lm(tiny_dir: Path) -> LM:
    return LM.load(tiny_dir, name="tiny")


def hf_nll(lm: LM, text: str) -> tuple[float, int]:
    """Total NLL (nats) of ``text`` after the start token, from HF's own ``labels=`` loss."""
    ids = torch.tensor([[lm.start_id, *lm.encode([text])[0]]])
    with torch.no_grad():
        loss = lm.model(input_ids=ids, labels=ids).loss.item()  # mean over the len-1 predicted tokens
    n = ids.shape[1] - 1
    return loss * n, n


def write_docs(directory: Path, docs: list[Document]) -> Path:
    with ShardWriter(directory, "part", docs_per_shard=2) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return directory


def corpus_docs() -> list[Document]:
    return [Document(f"{d}-{i}", t, d, "test") for d, ts in CORPUS.items() for i, t in enumerate(ts)]


# ----------------------------------------------------------------------------------- log-likelihood
def test_span_logprobs_equal_manual_forward(lm: LM) -> None:
    texts = ["hello river", "The quick brown fox jumps over the lazy dog.", "x"]
    spans = [Span([lm.start_id, *ids], 1) for ids in lm.encode(texts)]
    got = span_logprobs(lm, spans, batch_tokens=200)  # one padded batch of three lengths
    for text, span, lp in zip(texts, spans, got, strict=True):
        ids = torch.tensor([span.ids])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0]
        manual = torch.log_softmax(logits.double(), -1)[:-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
        assert lp.shape == manual.shape
        assert torch.allclose(lp, manual, atol=1e-4)
        nll, n = hf_nll(lm, text)
        assert -float(lp.sum()) == pytest.approx(nll, rel=1e-4)
        assert len(lp) == n


def test_context_span_scores_only_continuation(lm: LM) -> None:
    ctx, cont = lm.encode(["Q: where?\nA:"])[0], lm.encode([" river"])[0]
    full_ids = [lm.start_id, *ctx, *cont]
    (lp,) = span_logprobs(lm, [Span(full_ids, 1 + len(ctx))])

    def total_nll(ids: list[int]) -> float:
        t = torch.tensor([ids])
        with torch.no_grad():
            return lm.model(input_ids=t, labels=t).loss.item() * (len(ids) - 1)

    assert len(lp) == len(cont)  # continuation NLL = NLL(context + continuation) - NLL(context)
    assert -float(lp.sum()) == pytest.approx(total_nll(full_ids) - total_nll(full_ids[: 1 + len(ctx)]), rel=1e-4)


def test_windows_score_every_token_once() -> None:
    ids = list(range(10, 33))
    spans = windows(ids, start_id=1, max_len=8)
    targets = [t for s in spans for t in s.ids[s.start :]]
    assert targets == ids
    assert all(len(s.ids) <= 8 for s in spans)
    assert spans[0].ids[0] == 1 and spans[1].ids[0] == spans[0].ids[-1]


# ------------------------------------------------------------------------------------ bits per byte
def test_bits_per_byte_hand_computed(lm: LM, tmp_path: Path) -> None:
    data = write_docs(tmp_path / "docs", corpus_docs())
    from lmpipe.documents import iter_documents

    got = heldout_metrics(lm, iter_documents(data), HeldoutConfig(), batch_tokens=64)
    totals = {"nll": 0.0, "tokens": 0, "bytes": 0}
    for domain, texts in CORPUS.items():
        nll = tokens = nbytes = 0
        for t in texts:
            a, n = hf_nll(lm, t)
            nll, tokens, nbytes = nll + a, tokens + n, nbytes + len(t.encode("utf-8"))
        assert nbytes > sum(map(len, texts)) or domain == "code"  # prose has multi-byte characters
        m = got[domain]
        assert (m["docs"], m["tokens"], m["bytes"]) == (len(texts), tokens, nbytes)
        assert m["loss"] == pytest.approx(nll / tokens, rel=1e-4)
        assert m["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
        assert m["bits_per_byte"] == pytest.approx(nll / (math.log(2) * nbytes), rel=1e-4)
        for k, v in (("nll", nll), ("tokens", tokens), ("bytes", nbytes)):
            totals[k] += v
    assert got["all"]["bits_per_byte"] == pytest.approx(totals["nll"] / (math.log(2) * totals["bytes"]), rel=1e-4)


def test_heldout_budget_and_windowing(lm: LM, tmp_path: Path) -> None:
    from lmpipe.documents import iter_documents

    data = write_docs(tmp_path / "docs", corpus_docs())
    one = heldout_metrics(lm, iter_documents(data), HeldoutConfig(max_docs_per_domain=1), batch_tokens=64)
    assert one["prose"]["docs"] == 1 and one["code"]["docs"] == 1
    first = CORPUS["prose"][0]
    assert one["prose"]["bytes"] == len(first.encode())
    tok = heldout_metrics(lm, iter_documents(data), HeldoutConfig(max_tokens_per_domain=1), batch_tokens=64)
    assert tok["prose"]["docs"] == 1  # whole documents: the first one already exceeds the budget
    small = heldout_metrics(lm, iter_documents(data), HeldoutConfig(seq_len=6), batch_tokens=64)
    full = heldout_metrics(lm, iter_documents(data), HeldoutConfig(), batch_tokens=64)
    assert small["prose"]["tokens"] == full["prose"]["tokens"]  # same tokens scored, shorter contexts
    assert small["prose"]["loss"] != pytest.approx(full["prose"]["loss"], rel=1e-6)


# --------------------------------------------------------------------------------------------- QA
def test_choose_uses_length_normalised_score() -> None:
    assert choose([-10.0, -12.0], [2, 12]) == 1  # -5.0 vs -1.0 per char
    assert choose([-10.0, -12.0], [1, 1]) == 0  # unnormalised prefers the shorter, likelier string
    assert choose([-3.0, -3.0, -1.0], [1, 1, 1]) == 2


ITEMS = [
    QAItem("q1", "The Datadaer Observatory", "In which city is The Datadaer Observatory based?",
           ["Drapoushaven", "Hyrdramwick", "Rome", "Basvoumholm"], 3),
    QAItem("q2", "The Zed Shipyard", "Who founded The Zed Shipyard?", ["Ann Lee", "Bo", "Cyrus Quintavalle"], 0),
]


@pytest.mark.parametrize("norm", ["chars", "tokens", "none"])
def test_multiple_choice_picks_highest_normalised(lm: LM, norm: str) -> None:
    cfg = QAConfig(normalise=norm, template="{title}\nQ: {question}\nA:")
    summary, rows = multiple_choice(lm, ITEMS, cfg, batch_tokens=48)
    n_correct = 0
    for it, row in zip(ITEMS, rows, strict=True):
        ctx = prompt(it, cfg.template)
        scores = []
        for c in it.choices:
            ctx_ids, c_ids = lm.encode([ctx])[0], lm.encode([" " + c])[0]
            ids = torch.tensor([[lm.start_id, *ctx_ids, *c_ids]])
            with torch.no_grad():
                logp = torch.log_softmax(lm.model(input_ids=ids).logits[0].double(), -1)
            ll = sum(float(logp[len(ctx_ids) + k, t]) for k, t in enumerate(c_ids))
            length = {"chars": len(" " + c), "tokens": len(c_ids), "none": 1}[norm]
            scores.append(ll / length)
        expected = max(range(len(scores)), key=scores.__getitem__)
        assert row["pred"] == expected
        n_correct += expected == it.answer_index
    assert summary["mc_accuracy"] == n_correct / len(ITEMS)
    assert summary["questions"] == 2


def test_normalised_exact_match() -> None:
    assert normalise_answer("  The Basvoumholm. ") == normalise_answer("basvoumholm")
    assert normalise_answer("An  otter!") == "otter"
    assert normalise_answer("1,204") == "1204"
    assert normalise_answer("Basvoumholm Bay") != normalise_answer("Basvoumholm")


def test_batched_generation_equals_unbatched_greedy(lm: LM) -> None:
    cfg = QAConfig(max_new_tokens=5)
    summary, rows = exact_match(lm, ITEMS, cfg, batch_size=2)  # prompts of different lengths: left padding
    for it, row in zip(ITEMS, rows, strict=True):
        ids = torch.tensor([[lm.start_id, *lm.encode([prompt(it, cfg.template)])[0]]])
        out = lm.model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=lm.pad_id)
        new = out[0, ids.shape[1]:].tolist()
        if lm.eos_id in new:
            new = new[: new.index(lm.eos_id)]
        text = lm.tokenizer.decode(new, skip_special_tokens=True).strip().split("\n")[0].strip()
        assert row["generated"] == text
    assert summary["exact_match"] == sum(r["exact_match"] for r in rows) / 2


def test_quality_loader_is_closed_book(tmp_path: Path) -> None:
    arts = [
        {"article_id": "a1", "title": "The Glass Moon", "article": "SECRET ARTICLE TEXT about the moon.",
         "questions": [
             {"question": "Who broke the moon?", "options": ["Ann", "Bob", "Cy", "Di"], "gold_label": 2,
              "question_unique_id": "a1-q1"},
             {"question": "Unlabelled?", "options": ["x", "y"]},
         ]},
        {"article_id": "a2", "title": "Rivers", "article": "SECRET too",
         "questions": [{"question": "How many rivers?", "options": ["1", "2", "3", "4"], "gold_label": 4}]},
    ]
    f = tmp_path / "quality.jsonl"
    f.write_text("\n".join(json.dumps(a) for a in arts) + "\n")
    qa = load_qa(f)
    assert [(i.id, i.answer, i.title) for i in qa.items] == [("a1-q1", "Bob", "The Glass Moon"), ("a2-0", "4", "Rivers")]
    assert qa.skipped == {"no_gold_label": 1}
    cfg = QAConfig(template="{title}\n{question}")
    assert all("SECRET" not in prompt(i, cfg.template) for i in qa.items)
    with pytest.raises(ValueError, match="closed-book"):
        QAConfig(template="{article}\n{question}")


def test_simple_jsonl_loader_and_errors(tmp_path: Path) -> None:
    good = {"id": "x", "entity": "E", "title": "T", "question": "Q?", "choices": ["a", "b"], "answer_index": 1,
            "answer": "b"}
    f = tmp_path / "qa.jsonl"
    f.write_text(json.dumps(good) + "\n")
    (item,) = load_qa(f).items
    assert (item.answer, item.entity) == ("b", "E")
    f.write_text(json.dumps(good) + "\n" + json.dumps({"question": "Q?"}) + "\n")
    with pytest.raises(ValueError, match=r"qa.jsonl:2: missing field"):
        load_qa(f)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_qa(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------ toxicity
def test_rtp_summary_hand_computed() -> None:
    s = rtp_summary([[0.1, 0.7, 0.2], [0.2, 0.3, 0.0]], threshold=0.5)
    assert s["expected_max_toxicity"] == pytest.approx((0.7 + 0.3) / 2)
    assert s["toxicity_probability"] == pytest.approx(0.5)
    assert s["mean_toxicity"] == pytest.approx(1.5 / 6)
    assert (s["prompts"], s["samples_per_prompt"]) == (2, 3)


def test_wordlist_scorer_and_fallback(lm: LM) -> None:
    w = WordListScorer(["idiot", "moron"])
    assert w.score(["you idiot", "Idiot, MORON!", "a fine idiotic idea"]) == [0.5, 0.75, 0.0]
    scorer, why = resolve_scorer("auto")
    assert scorer.name and why
    if why.startswith("fallback"):
        assert "LDNOOBW" in scorer.name
    cfg = ToxicityConfig(prompts=["You are a", "I think"], samples_per_prompt=3, max_new_tokens=4)
    summary, rows = toxicity_eval(lm, cfg, w, seed=1)
    assert len(rows) == 6 and summary["samples_per_prompt"] == 3
    again, rows2 = toxicity_eval(lm, cfg, w, seed=1)
    assert [r["completion"] for r in rows] == [r["completion"] for r in rows2]  # seeded sampling


def test_wordlist_scorer_uses_the_shipped_list_or_a_param(tmp_path: Path) -> None:
    from lmpipe.evaluation.toxicity import wordlist_scorer

    default, why = resolve_scorer("wordlist")
    assert why == "configured" and "LDNOOBW" in default.name
    # listed terms (one word, a phrase) count; the demo classifier's mild insults are not on the real list
    assert default.score(["a nude", "two girls, one cup and a nude", "you idiot moron", "tea"]) == [0.5, 0.75, 0.0, 0.0]
    (tmp_path / "list.txt").write_text("idiot\nblue moon\n")
    mine, _ = resolve_scorer("wordlist", str(tmp_path / "list.txt"))
    assert mine.score(["you idiot", "once in a Blue  Moon, idiot"]) == [0.5, 0.75]
    assert str(tmp_path / "list.txt") in wordlist_scorer(str(tmp_path / "list.txt")).name


# ----------------------------------------------------------------------------------------- forgetting
def test_forgetting_arithmetic() -> None:
    parent = {"heldout": {"prose": {"bits_per_byte": 2.0, "loss": 1.0}, "code": {"bits_per_byte": 3.0, "loss": 2.0}},
              "qa": {"mc_accuracy": 0.5}}
    child = {"heldout": {"prose": {"bits_per_byte": 2.5, "loss": 1.2}, "code": {"bits_per_byte": 2.0, "loss": 1.5}},
             "qa": {"mc_accuracy": 0.25}}
    f = forgetting(child, parent, ["prose", "math"])
    assert f["domains"]["prose"]["bits_per_byte_delta"] == pytest.approx(0.5)
    assert f["mean_bits_per_byte_increase"] == pytest.approx(0.5)
    assert f["missing_domains"] == ["math"]
    assert f["mc_accuracy_delta"] == pytest.approx(-0.25)


def _train(model, tok, text: str, steps: int, lr: float = 3e-3) -> None:
    ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.eval()


def test_forgetting_sign_on_constructed_case(tiny_dir: Path, tmp_path: Path) -> None:
    """Parent learns domain A; child = parent trained on B only. Child forgets A (+) and gains on B (-)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a_text, b_text = CORPUS["prose"][0], CORPUS["code"][0]
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(0)
    _train(model, tok, a_text, 40)
    model.save_pretrained(tmp_path / "parent")
    tok.save_pretrained(tmp_path / "parent")
    _train(model, tok, b_text, 40)
    model.save_pretrained(tmp_path / "child")
    tok.save_pretrained(tmp_path / "child")
    data = write_docs(tmp_path / "docs", [Document("a", a_text, "prose", "t"), Document("b", b_text, "code", "t")])
    cfg = EvaluateConfig(models={"parent": {"path": str(tmp_path / "parent")},
                                 "child": {"path": str(tmp_path / "child"), "parent": "parent"}},
                         old_domains=["prose"])
    out, serial_rows = evaluate_models(cfg, data, None, seed=0, log=lambda _: None)
    f = out["models"]["child"]["forgetting"]
    assert f["parent"] == "parent"
    assert f["domains"]["prose"]["bits_per_byte_delta"] > 0.1
    assert f["mean_bits_per_byte_increase"] > 0.1
    code = forgetting(out["models"]["child"], out["models"]["parent"], ["code"])
    assert code["domains"]["code"]["bits_per_byte_delta"] < -0.1

    # one model per worker process gives what one process gives (seeded sampling included), in config order
    from lmpipe.executors import LocalExecutor

    par, rows = evaluate_models(cfg, data, None, seed=0, log=lambda _: None, ex=LocalExecutor(2))
    drop = lambda r: {m: {k: v for k, v in x.items() if k != "seconds"} for m, x in r["models"].items()}  # noqa: E731
    assert drop(par) == drop(out) and par["model_order"] == ["parent", "child"]
    assert rows == serial_rows


# -------------------------------------------------------------------------------------------- config
def test_config_models_shorthand_and_errors() -> None:
    base = {"ingest": {"sources": [{"uri": "x", "domain": "prose"}]}}
    p = parse_params({**base, "evaluate": {"models": {"pretrain": "models/pretrain",
                                                      "cpt": {"path": "models/cpt", "parent": "pretrain"}}}})
    assert p.evaluate.models["pretrain"].path == "models/pretrain"
    assert p.evaluate.models["cpt"].parent == "pretrain"
    with pytest.raises(ConfigError, match="parent 'sft' is not one of"):
        parse_params({**base, "evaluate": {"models": {"cpt": {"path": "m", "parent": "sft"}}}})
    with pytest.raises(ConfigError, match="cycle"):
        parse_params({**base, "evaluate": {"models": {"a": {"path": "m", "parent": "b"}, "b": {"path": "n", "parent": "a"}}}})


def test_missing_model_dir_is_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = EvaluateConfig(models={"pretrain": {"path": str(tiny_dir)}, "sft": {"path": str(tmp_path / "models/sft")}})
    with pytest.raises(ModelDirError, match=r"sft: .*models/sft"):
        evaluate_models(cfg, None, None, seed=0, log=lambda _: None)


# ---------------------------------------------------------------------------------- lm-eval + stage
def test_lm_eval_adapter_skips_cleanly(tiny_dir: Path) -> None:
    from lmpipe.evaluation.config import LmEvalConfig
    from lmpipe.evaluation.harness import lm_eval_available, run_lm_eval

    assert "no tasks" in run_lm_eval(tiny_dir, LmEvalConfig())["skipped"]
    if not lm_eval_available():
        assert "not installed" in run_lm_eval(tiny_dir, LmEvalConfig(tasks=["demo"]))["skipped"]


def write_qa(path: Path) -> Path:
    """The QA items as the evaluate stage reads them (JSONL, multiple choice)."""
    path.write_text("".join(json.dumps({"id": it.id, "title": it.title, "question": it.question, "choices": it.choices,
                                        "answer_index": it.answer_index}) + "\n" for it in ITEMS))
    return path


def test_evaluate_stage_writes_metrics_samples_plots(tiny_dir: Path, tmp_path: Path) -> None:
    import yaml

    data = write_docs(tmp_path / "docs", corpus_docs())
    qa = write_qa(tmp_path / "qa.jsonl")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "ingest": {"sources": [{"uri": "x", "domain": "prose"}]},
        "evaluate": {"models": {"pretrain": str(tiny_dir), "cpt": {"path": str(tiny_dir), "parent": "pretrain"}},
                     "toxicity": {"prompts": ["You are"], "samples_per_prompt": 2, "max_new_tokens": 3},
                     "samples": {"prompts": ["The river", "def f("], "max_new_tokens": 4},
                     "qa": {"max_new_tokens": 3}},
    }))
    out = tmp_path / "out"
    run_stage("evaluate", by_name()["evaluate"].entry,
              {"heldout": str(data), "qa": str(qa), "samples": str(out / "samples.jsonl"), "plots": str(out / "plots")},
              str(params), str(out / "evaluate.json"))
    m = json.loads((out / "evaluate.json").read_text())
    assert m["model_order"] == ["pretrain", "cpt"]
    cpt = m["models"]["cpt"]
    assert set(cpt) >= {"heldout", "qa", "toxicity", "forgetting", "seconds"}
    assert cpt["forgetting"]["mean_bits_per_byte_increase"] == pytest.approx(0.0, abs=1e-9)  # same weights
    assert cpt["qa"]["questions"] == 2 and "exact_match" in cpt["qa"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "sample" for r in rows) == 4 and sum(r["kind"] == "toxicity" for r in rows) == 4
    bpb = json.loads((out / "plots" / "bits_per_byte.json").read_text())
    assert {r["series"] for r in bpb} >= {"pretrain · prose", "cpt · code"}


# ------------------------------------------------------------------ pre-filter held-out, kept steps
def _bpb_by_hf(model_dir: Path, docs: list[Document]) -> dict[str, float]:
    """bits/byte per domain (and all) from HF's own loss of a freshly loaded model."""
    lm = LM.load(model_dir, name="direct")
    tally: dict[str, list[float]] = {}
    for d in docs:
        nll, _ = hf_nll(lm, d.text)
        for key in (d.domain, "all"):
            t = tally.setdefault(key, [0.0, 0])
            t[0] += nll
            t[1] += len(d.text.encode("utf-8"))
    return {k: nll / (math.log(2) * nbytes) for k, (nll, nbytes) in tally.items()}


def test_evaluate_scores_prefilter_sets_and_kept_steps(tiny_dir: Path, tmp_path: Path) -> None:
    import csv
    import shutil

    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a training run's checkpoint dir: step 3 is the tiny model trained 3 steps on code, step 7 the final model
    steps = tmp_path / "ckpt" / "steps"
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(0)
    _train(model, tok, CORPUS["code"][0], 3)
    model.save_pretrained(steps / "step-000003")
    tok.save_pretrained(steps / "step-000003")
    shutil.copytree(tiny_dir, steps / "step-000007")
    (steps / "step-000009.tmp").mkdir()  # an export in progress is not a kept model
    docs = corpus_docs()
    clean_docs = [docs[0], docs[3]]  # what a filter kept of the raw sample
    paths = {"heldout": write_docs(tmp_path / "heldout", docs), "heldout_raw": write_docs(tmp_path / "raw", docs),
             "heldout_clean": write_docs(tmp_path / "clean", clean_docs), "ckpt_pretrain": tmp_path / "ckpt",
             "ckpt_cpt": tmp_path / "no-ckpt"}
    qa = write_qa(tmp_path / "qa.jsonl")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "ingest": {"sources": [{"uri": "x", "domain": "prose"}]},
        "evaluate": {"models": {"pretrain": str(tiny_dir), "cpt": {"path": str(tiny_dir), "parent": "pretrain"}},
                     "qa": {"generate": False}},
    }))
    out = tmp_path / "out"
    run_stage("evaluate", by_name()["evaluate"].entry,
              {**{k: str(v) for k, v in paths.items()}, "qa": str(qa), "samples": str(out / "samples.jsonl"),
               "plots": str(out / "plots"), "steps": str(out / "steps.tsv")},
              str(params), str(out / "evaluate.json"))
    m = json.loads((out / "evaluate.json").read_text())["models"]
    pre = m["pretrain"]["heldout_prefilter"]
    for subset, want in (("raw", _bpb_by_hf(tiny_dir, docs)), ("clean", _bpb_by_hf(tiny_dir, clean_docs))):
        assert {d: x["bits_per_byte"] for d, x in pre[subset].items()} == pytest.approx(want, rel=1e-4)
    assert pre["clean"]["prose"]["docs"] == 1 and pre["clean"]["code"]["docs"] == 1
    curve = m["pretrain"]["steps"]
    assert set(curve) == {"3", "7"}
    step3 = _bpb_by_hf(steps / "step-000003", docs)
    assert {d: x["bits_per_byte"] for d, x in curve["3"].items()} == pytest.approx(step3, rel=1e-4)
    assert curve["7"]["all"]["bits_per_byte"] == pytest.approx(m["pretrain"]["heldout"]["all"]["bits_per_byte"])
    assert curve["3"]["code"]["bits_per_byte"] < curve["7"]["code"]["bits_per_byte"]  # it trained on code
    assert "steps" not in m["cpt"]  # no kept models: nothing to score
    assert "heldout_prefilter" not in m["cpt"]  # evaluate.prefilter.models default: the models without a parent
    rows = list(csv.DictReader((out / "steps.tsv").open(), delimiter="\t"))
    assert [r["step"] for r in rows] == ["3", "7"]
    assert set(rows[0]) == {"step", "pretrain/all", "pretrain/code", "pretrain/prose"}
    assert float(rows[0]["pretrain/code"]) == pytest.approx(step3["code"], rel=1e-4)


def test_no_kept_steps_writes_a_header_only_curve(tmp_path: Path) -> None:
    from lmpipe.evaluation.steps import kept_steps, write_tsv

    assert kept_steps(tmp_path / "absent") == []
    assert write_tsv({}, tmp_path / "steps.tsv") == []
    assert (tmp_path / "steps.tsv").read_text() == "step\n"


def test_prefilter_models_must_be_evaluated_models() -> None:
    from lmpipe.evaluation.run import prefilter_targets

    cfg = EvaluateConfig(models={"a": {"path": "x"}, "b": {"path": "y", "parent": "a"}, "c": {"path": "z"}})
    assert prefilter_targets(cfg) == {"a", "c"}
    assert prefilter_targets(EvaluateConfig(models=cfg.models, prefilter={"models": ["b"]})) == {"b"}
    with pytest.raises(ValueError, match="names \\['nope'\\]"):
        prefilter_targets(EvaluateConfig(models={"a": {"path": "x"}}, prefilter={"models": ["nope"]}))
