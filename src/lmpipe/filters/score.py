"""Score once: every per-document measurement, stored in ``meta["scores"]`` beside the document.

Reference models (n-gram LM, toxicity classifier, eval n-gram index) are built once in the driver and saved
to files; each shard worker loads them by path. Their SHA-256 is part of the job, so a changed model
re-scores every shard while an unchanged one lets a rerun resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from lmpipe.documents import Document, Rejected, iter_documents, sha256_file
from lmpipe.filters import c4, encoding, fineweb, gopher, language, pii, quality
from lmpipe.filters.config import FilterScoreConfig
from lmpipe.filters.decontam import EvalIndex
from lmpipe.filters.perplexity import KneserNeyLM
from lmpipe.filters.text import TERMINAL_PUNCTUATION, normalize_words, split_words
from lmpipe.filters.toxicity import HashedLogReg, HFClassifier, WordList, read_labelled
from lmpipe.quality.rater import MODEL_FILE as RATER_FILE
from lmpipe.quality.rater import HashedRater, combine
from lmpipe.sharded import dataset_units, run_stage

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

Scores = dict[str, Any]
RATER_BATCH = 256  # documents the quality rater scores together (one gather per batch)


class ScoreJob(BaseModel):
    """What a shard worker needs: the config and the model files (with hashes, for resume fingerprints)."""

    model_config = ConfigDict(frozen=True)
    cfg: FilterScoreConfig
    lm: str | None = None
    lm_sha: str = ""
    classifier: str | None = None
    classifier_sha: str = ""
    eval_index: str | None = None
    eval_index_sha: str = ""
    rater: str | None = None
    rater_sha: str = ""


class Scorer:
    """Computes all measurements for one text. Construct once per process (models load here)."""

    def __init__(self, cfg: FilterScoreConfig, lm: KneserNeyLM | None = None, classifier: HashedLogReg | None = None,
                 eval_index: EvalIndex | None = None, rater: HashedRater | None = None) -> None:
        self.cfg = cfg
        self.stop_words = frozenset(cfg.stop_words)
        self.c4_rules = c4.C4LineRules(
            cfg.c4.min_words_per_line, cfg.c4.max_word_length, cfg.c4.remove_citations, cfg.c4.javascript, cfg.c4.policy)
        self.stop_chars = tuple(cfg.fineweb.stop_chars) if cfg.fineweb.stop_chars else tuple(TERMINAL_PUNCTUATION)
        tox = cfg.toxicity
        self.wordlist = WordList.load(tox.wordlist)
        self.lm, self.classifier, self.eval_index, self.rater = lm, classifier, eval_index, rater
        self.hf = HFClassifier(tox.hf_model_dir, tox.hf_label) if tox.hf_model_dir else None

    def heuristics(self, text: str, words: list[str]) -> Scores:
        """The Gopher, C4 and FineWeb measurements (what the benchmark compares with the reference)."""
        s: Scores = {}
        s.update(gopher.quality_scores(text, words, self.stop_words))
        s.update(gopher.repetition_scores(text, words, tuple(self.cfg.top_ngrams), tuple(self.cfg.dup_ngrams)))
        s.update(c4.scores(text, self.c4_rules))
        s.update(fineweb.scores(text, words, self.stop_chars, self.cfg.fineweb.short_line_length))
        return s

    def score(self, text: str) -> Scores:
        words = split_words(text)
        s = self.heuristics(text, words)
        s["chars"] = len(text)
        s["mojibake"] = encoding.mojibake_count(text)
        lang, prob = language.identify(text, self.cfg.language_chars)
        s["lang"], s["lang_score"] = lang, round(prob, 4)
        norm = normalize_words(text)
        s["tox_words"] = self.wordlist.count(norm, text)
        s["tox_word_frac"] = s["tox_words"] / max(len(norm), 1)
        if self.classifier is not None:
            s["tox_classifier"] = round(self.classifier.predict_words(norm), 5)
        if self.hf is not None:
            s["tox_hf"] = round(self.hf.predict(text), 5)
        if self.lm is not None:
            s["perplexity"] = round(self.lm.perplexity([w.lower() for w in words]), 3)
        for kind, n in pii.find(text).items():
            s[f"pii_{kind}"] = n
        if self.eval_index is not None:
            s["decontam_hits"], s["decontam_item"] = self.eval_index.match(norm)
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in s.items()}

    def rate(self, texts: list[str], scores: list[Scores]) -> None:
        """Add the learned rater's ``q_<dimension>`` scores and their weighted ``quality`` (batched)."""
        if self.rater is None or not texts:
            return
        dims = self.rater.dimensions
        for s, row in zip(scores, self.rater.predict(texts).tolist(), strict=True):
            per = {d: round(v, 4) for d, v in zip(dims, row, strict=True)}
            s.update({quality.PREFIX + d: v for d, v in per.items()})
            s[quality.SCORE] = round(combine(per, self.cfg.quality.weights), 4)


_SCORERS: dict[str, Scorer] = {}


def _scorer(job: ScoreJob) -> Scorer:
    """One Scorer per process and job: workers score many shards but load the models once."""
    key = job.model_dump_json()
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = Scorer(
            job.cfg,
            KneserNeyLM.load(job.lm) if job.lm else None,
            HashedLogReg.load(job.classifier) if job.classifier else None,
            EvalIndex.load(job.eval_index) if job.eval_index else None,
            HashedRater.load(job.rater) if job.rater else None,
        )
    return _SCORERS[key]


def score_unit(unit: str, job: ScoreJob) -> Iterator[Document | Rejected]:
    """``run_stage`` process: one input shard in, the same documents out with ``meta["scores"]``."""
    scorer = _scorer(job)
    n = 0
    batch: list[Document] = []
    for doc in iter_documents(unit):
        n += 1
        doc.meta["scores"] = scorer.score(doc.text)
        batch.append(doc)
        if len(batch) >= RATER_BATCH:
            scorer.rate([d.text for d in batch], [d.meta["scores"] for d in batch])
            yield from batch
            batch.clear()
    scorer.rate([d.text for d in batch], [d.meta["scores"] for d in batch])
    yield from batch
    return {"in": n}


# ------------------------------------------------------------------------------------ model building
def build_models(cfg: FilterScoreConfig, docs_dir: str | Path, model_dir: str | Path,
                 rater_dir: str | Path | None = None) -> tuple[ScoreJob, dict]:
    """Train/build the reference models into ``model_dir``; returns the job and a summary for metrics.
    The quality rater is trained by its own stage: it is read from ``rater_dir`` when scoring is enabled."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    job: dict[str, Any] = {"cfg": cfg}
    if cfg.quality.enabled:
        rater_path = Path(rater_dir or "") / RATER_FILE
        if rater_dir is None or not rater_path.is_file():
            raise FileNotFoundError(f"filter.score.quality.enabled but no rater at {rater_path}: run stages "
                                    "`label` and `rater`, or set filter.score.quality.enabled: false")
        rater = HashedRater.load(rater_path)
        unknown = sorted(set(cfg.quality.weights) - set(rater.dimensions))
        if unknown:
            raise ValueError(f"filter.score.quality.weights names {unknown}; the rater has {rater.dimensions}")
        job.update(rater=str(rater_path), rater_sha=sha256_file(rater_path))
        info["quality_rater"] = {"dimensions": rater.dimensions, "weights": cfg.quality.weights or "equal"}
    pcfg = cfg.perplexity
    lm_path = model_dir / "ngram_lm.npz"
    if pcfg.reference_domain:
        train = []
        for doc in iter_documents(docs_dir):
            if doc.domain == pcfg.reference_domain:
                train.append([w.lower() for w in split_words(doc.text)])
                if len(train) >= pcfg.max_train_docs:
                    break
        if not train:
            raise ValueError(f"filter.score.perplexity.reference_domain={pcfg.reference_domain!r}: no such documents")
        lm = KneserNeyLM(pcfg.order, pcfg.discount, pcfg.min_count).fit(train)
        lm.save(lm_path)
        job.update(lm=str(lm_path), lm_sha=sha256_file(lm_path))
        info["lm"] = {"docs": len(train), "vocab": len(lm.vocab), "order": pcfg.order}
    else:
        lm_path.unlink(missing_ok=True)
    tcfg = cfg.toxicity
    clf_path = model_dir / "toxicity_clf.npz"
    if tcfg.train_files:
        texts, labels = [], []
        for f in tcfg.train_files:
            for k, (t, y) in enumerate(read_labelled(f.path, f.format, f.text_field, f.label_field)):
                if f.max_rows is not None and k >= f.max_rows:
                    break
                texts.append(t)
                labels.append(y)
        clf = HashedLogReg(tcfg.buckets, tcfg.ngrams).fit(texts, labels, tcfg.epochs, tcfg.lr, tcfg.l2)
        clf.save(clf_path)
        job.update(classifier=str(clf_path), classifier_sha=sha256_file(clf_path))
        info["toxicity_classifier"] = {"train_docs": len(texts), "positives": int(sum(labels))}
    else:
        clf_path.unlink(missing_ok=True)
    dcfg = cfg.decontam
    idx_path = model_dir / "eval_ngrams.npz"
    if dcfg.eval_files:
        index = EvalIndex(dcfg.ngram, dcfg.min_ngram)
        for ef in dcfg.eval_files:
            if not Path(ef.path).exists():
                raise FileNotFoundError(f"filter.score.decontam.eval_files: {ef.path} not found")
            index.add_jsonl(ef.path, ef.id_field, ef.text_fields, prefix=f"{Path(ef.path).stem}:")
        index.save(idx_path)
        job.update(eval_index=str(idx_path), eval_index_sha=sha256_file(idx_path))
        info["decontam"] = {"items": index.items, "ngrams": sum(len(t) for t in index.grams.values())}
    else:
        idx_path.unlink(missing_ok=True)
    return ScoreJob(**job), info


def score_dataset(cfg: FilterScoreConfig, docs: str | Path, out: str | Path, rejected: str | Path,
                  model_dir: str | Path, executor: Executor, rater_dir: str | Path | None = None,
                  heldout: tuple[Path, Path, Path] | None = None) -> dict[str, Any]:
    """Build the reference models once (into ``model_dir``), then score every shard of ``docs``.

    ``heldout``: ``(docs, out, rejected)`` of the pre-filter held-out sample, scored by the same job (models
    built from ``docs`` only, so the sample never shapes a reference model) for the filter to judge it."""
    job, info = build_models(cfg, docs, model_dir, rater_dir)
    stats = run_stage(score_unit, dataset_units(docs), job, out, rejected, executor, cfg.docs_per_shard, desc="score")
    result = {**stats, "models": info}
    if heldout is not None:
        h_docs, h_out, h_rejected = heldout
        h = run_stage(score_unit, dataset_units(h_docs), job, h_out, h_rejected, executor, cfg.docs_per_shard,
                      desc="score heldout")
        result["heldout"] = {k: h[k] for k in ("in", "kept", "rejected", "kept_by_domain", "by_reason")}
    return result


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``score``: every document of ``io.docs`` with its measurements in ``meta["scores"]``; the same for
    the pre-filter held-out sample ``io.heldout`` (→ ``io.heldout_scored``) when the stage is given it."""
    heldout = (io.heldout, io.heldout_scored, io.heldout_scored_rejected) if "heldout" in io else None
    return score_dataset(p.filter.score, io.docs, io.out, io.rejected, io.models, ex, io.get("rater"), heldout)
