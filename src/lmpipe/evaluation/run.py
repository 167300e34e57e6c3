"""Evaluate every configured model the same way, so pipeline stages can be compared side by side.

Models are evaluated parents first; a missing model directory is an error naming it (never skipped), and
each model with a ``parent`` gets a ``forgetting`` section relative to it. Beside the held-out split of the
trained-on data (``heldout``), the models of ``evaluate.prefilter`` (default: those without a parent) are scored
on the sample drawn before filtering (``heldout_prefilter``: ``raw``, all of it, and ``clean``, the part the
filter keeps), and a model whose training run kept models at
chosen steps gets its held-out curve over them (``steps``, :mod:`lmpipe.evaluation.steps`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmpipe.conditioning.config import ConditionConfig
from lmpipe.documents import MANIFEST, iter_documents
from lmpipe.evaluation.config import EvaluateConfig
from lmpipe.evaluation.forgetting import forgetting
from lmpipe.evaluation.harness import run_lm_eval
from lmpipe.evaluation.heldout import heldout_metrics, subset_metrics
from lmpipe.evaluation.lm import LM, ModelDirError, generate
from lmpipe.evaluation.qa import (
    QASet,
    coverage_split,
    covered_entities,
    entity_of,
    exact_match,
    multiple_choice,
)
from lmpipe.evaluation.steps import step_curve, write_tsv
from lmpipe.evaluation.toxicity import ToxicityScorer, load_prompts, resolve_scorer, toxicity_eval

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor


def evaluation_order(cfg: EvaluateConfig) -> list[str]:
    """Model names with every parent before its children (config order otherwise)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        parent = cfg.models[name].parent
        if parent:
            visit(parent)
        order.append(name)

    for name in cfg.models:
        visit(name)
    return order


def check_models(cfg: EvaluateConfig) -> None:
    missing = [f"{n}: {m.path}" for n, m in cfg.models.items() if not (Path(m.path) / "config.json").is_file()]
    if missing:
        raise ModelDirError("model directories not found (no config.json): " + "; ".join(missing)
                            + ". Run the stages that make them, or drop them from evaluate.models.")


def evaluate_model(
    lm: LM,
    cfg: EvaluateConfig,
    heldout_dir: str | Path | None,
    qa: QASet | None,
    scorer: ToxicityScorer | None,
    seed: int,
    model_dir: str | Path | None = None,
    condition: ConditionConfig | None = None,
    covered: set[str] | None = None,
    tox_prompts: tuple[list[str], str] | None = None,
    prefilter: dict[str, str | Path | None] | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """All metrics of one model, and its sample rows (for ``reports/samples.jsonl``). ``prefilter``: named
    held-out datasets drawn before filtering (``raw``, ``clean``), scored as ``heldout_prefilter``. With ``condition``:
    held-out loss also with MeCo's metadata prefix (``heldout_meco``); toxicity of generations conditioned on
    the best PHF control token (``toxicity``) and without it (``toxicity_unconditioned``). ``covered``: the QA
    entities the synthetic corpus mentions (None: no coverage split)."""
    bs = cfg.batch_size
    t0 = time.perf_counter()
    res: dict[str, Any] = {}
    samples: list[dict] = []
    if heldout_dir is not None:
        res["heldout"] = heldout_metrics(lm, iter_documents(heldout_dir), cfg.heldout, cfg.batch_tokens)
        if condition is not None and condition.meco.enabled:
            from lmpipe.conditioning.meco import prefix

            meco = condition.meco
            res["heldout_meco"] = heldout_metrics(lm, iter_documents(heldout_dir), cfg.heldout, cfg.batch_tokens,
                                                  context=lambda d: prefix(meco, d.meta, d.source, d.domain))
    if prefilter and (pre := subset_metrics(lm, prefilter, cfg.heldout, cfg.batch_tokens)):
        res["heldout_prefilter"] = pre
    if qa is not None and qa.items:
        items = qa.items[: cfg.qa.max_questions] if cfg.qa.max_questions else qa.items
        mc, mc_rows = multiple_choice(lm, items, cfg.qa, cfg.batch_tokens)
        res["qa"] = {**mc, "normalise": cfg.qa.normalise, **{f"skipped_{k}": v for k, v in qa.skipped.items()}}
        if covered is not None:
            res["qa"]["coverage"] = coverage_split(items, mc_rows, covered)
        if cfg.qa.generate:
            em, rows = exact_match(lm, items, cfg.qa, bs)
            res["qa"]["exact_match"] = em["exact_match"]
            samples += [{"model": lm.name, "kind": "qa", "prompt": r["id"], **r} for r in rows]
    if cfg.posttrain.enabled:
        from lmpipe.posttrain.evaluate import posttrain_metrics

        res["posttrain"], rows = posttrain_metrics(lm, cfg.posttrain, bs)
        samples += rows
    prompts, source = tox_prompts if tox_prompts is not None else (cfg.toxicity.prompts, "inline prompts")
    if scorer is not None and prompts:
        # PHF: a model trained with control tokens is evaluated as it is used, generating after the best one
        # (``toxicity``, the path every model shares), and also without it (``toxicity_unconditioned``)
        good = _control_id(lm, condition)
        if good is not None:
            res["toxicity_unconditioned"], rows = toxicity_eval(lm, cfg.toxicity, scorer, seed, bs, prompts)
            samples += [{"model": lm.name, "kind": "toxicity_unconditioned", **r} for r in rows]
        used = lm if good is None else replace(lm, prompt_prefix=(good,))
        res["toxicity"], rows = toxicity_eval(used, cfg.toxicity, scorer, seed, bs, prompts)
        res["toxicity"]["prompt_source"] = source
        if good is not None:
            res["toxicity"]["control_token"] = condition.control.tokens[0]  # type: ignore[union-attr]
        samples += [{"model": lm.name, "kind": "toxicity", **r} for r in rows]
    if cfg.samples.prompts:
        gens = generate(lm, cfg.samples.prompts, cfg.samples.max_new_tokens, bs)
        samples += [{"model": lm.name, "kind": "sample", "prompt": p, "completion": g[0]}
                    for p, g in zip(cfg.samples.prompts, gens, strict=True)]
    if cfg.lm_eval.tasks and model_dir is not None:
        res["lm_eval"] = run_lm_eval(model_dir, cfg.lm_eval, bs)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res, samples


@dataclass(frozen=True)
class ModelJob:
    """One model's evaluation: everything a worker needs, picklable (the scorer is resolved in the worker)."""

    name: str
    cfg: EvaluateConfig
    heldout_dir: str | Path | None
    qa_path: str | Path | None
    seed: int
    condition: ConditionConfig | None
    covered: set[str] | None
    tox_prompts: tuple[list[str], str]
    prefilter: dict[str, str | Path | None] | None = None  # the pre-filter held-out datasets to score
    checkpoint: str | Path | None = None  # its training run's checkpoint dir: models kept at chosen steps


def evaluate_job(job: ModelJob) -> tuple[dict[str, Any], list[dict]]:
    """Executor entry: load one model and evaluate it (``evaluate_model``)."""
    import torch

    from lmpipe.evaluation.qa import load_qa

    cfg, m = job.cfg, job.cfg.models[job.name]
    torch.set_num_threads(cfg.threads)
    tox = cfg.toxicity
    scorer = resolve_scorer(tox.scorer, tox.wordlist, tox.hf_model_dir, tox.hf_label)[0] if job.tox_prompts[0] else None
    qa = load_qa(job.qa_path, cfg.qa.format) if job.qa_path is not None else None
    lm = LM.load(m.path, name=job.name, seq_len=cfg.heldout.seq_len)
    res, rows = evaluate_model(lm, cfg, job.heldout_dir, qa, scorer, job.seed, m.path, job.condition, job.covered,
                               job.tox_prompts, job.prefilter)
    del lm
    if job.heldout_dir is not None and job.checkpoint is not None:
        t0 = time.perf_counter()
        if curve := step_curve(job.name, job.checkpoint, job.heldout_dir, cfg.heldout, cfg.batch_tokens):
            res["steps"], res["steps_seconds"] = curve, round(time.perf_counter() - t0, 2)
    return res, rows


def _control_id(lm: LM, condition: ConditionConfig | None) -> int | None:
    """The id of the best control token when PHF is on and the model's tokenizer reserves it."""
    if condition is None or not condition.control.enabled:
        return None
    token = condition.control.tokens[0]
    i = lm.tokenizer.convert_tokens_to_ids(token)
    if i is None or i == lm.tokenizer.unk_token_id or lm.tokenizer.convert_ids_to_tokens(i) != token:
        raise ValueError(f"{lm.name}: condition.control is on but its tokenizer has no token {token!r}; "
                         "retrain (tokenize, pretrain) with the control tokens reserved")
    return int(i)


def prefilter_targets(cfg: EvaluateConfig) -> set[str]:
    """The models scored on the pre-filter held-out sample (``evaluate.prefilter.models``; default: no parent)."""
    names = cfg.prefilter.models
    if names is None:
        return {n for n, m in cfg.models.items() if m.parent is None}
    unknown = sorted(set(names) - set(cfg.models))
    if unknown:
        raise ValueError(f"evaluate.prefilter.models names {unknown}, not in evaluate.models ({sorted(cfg.models)})")
    return set(names)


def evaluate_models(
    cfg: EvaluateConfig,
    heldout_dir: str | Path | None,
    qa_path: str | Path | None,
    seed: int,
    log: Callable[[str], None] = print,
    condition: ConditionConfig | None = None,
    synthetic_dir: str | Path | None = None,
    ex: Executor | None = None,
    prefilter: dict[str, str | Path | None] | None = None,
    checkpoints: dict[str, str | Path] | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """``({"models": {name: metrics}, "toxicity_scorer": ...}, sample rows)`` for every configured model.
    ``synthetic_dir``: the synthetic (augment) documents; QA accuracy is then also split by entity coverage.
    ``ex``: models are evaluated one per worker (None: one after another in this process); the results do not
    depend on it (generation is seeded per prompt).
    ``prefilter``: the held-out sample drawn before filtering (``{"raw": dir, "clean": dir}``), scored for the
    models of ``evaluate.prefilter``. ``checkpoints``: model name -> its training run's checkpoint dir; the
    models kept there at chosen steps are scored on ``heldout_dir`` too (``steps``)."""
    from lmpipe.evaluation.qa import load_qa

    if not cfg.models:
        raise ValueError("evaluate.models is empty: name at least one model directory in params.yaml")
    check_models(cfg)
    prefilter_models = prefilter_targets(cfg)
    qa = load_qa(qa_path, cfg.qa.format) if qa_path is not None else None
    covered = None
    if qa is not None and synthetic_dir is not None and cfg.qa.coverage:
        covered = covered_entities({entity_of(it) for it in qa.items}, (d.text for d in iter_documents(synthetic_dir)))
        log(f"QA entities mentioned by the synthetic documents: {len(covered)}")
    tox = cfg.toxicity
    tox_prompts = load_prompts(tox)
    scorer, why = (resolve_scorer(tox.scorer, tox.wordlist, tox.hf_model_dir, tox.hf_label) if tox_prompts[0]
                   else (None, "no prompts"))
    if scorer is not None:
        log(f"toxicity scorer: {scorer.name} ({why})")
    results: dict[str, Any] = {}
    samples: list[dict] = []
    order = evaluation_order(cfg)
    jobs = [ModelJob(name, cfg, heldout_dir, qa_path, seed, condition, covered, tox_prompts,
                     prefilter if name in prefilter_models else None, (checkpoints or {}).get(name))
            for name in order]
    # models are independent (forgetting compares finished results): one per executor worker
    evaluated = ex.map(evaluate_job, jobs, desc="models") if ex is not None else [evaluate_job(j) for j in jobs]
    for name, (res, rows) in zip(order, evaluated, strict=True):
        results[name] = res
        samples += rows
        m = cfg.models[name]
        if m.parent:
            results[name]["forgetting"] = {"parent": m.parent,
                                           **forgetting(results[name], results[m.parent], cfg.old_domains)}
        log(f"{name}: {_headline(results[name])}")
    out: dict[str, Any] = {"models": results, "model_order": list(results)}  # JSON keys get sorted
    if scorer is not None:
        out["toxicity_scorer"] = f"{scorer.name} [{why}]"
    return out, samples


def _headline(r: dict[str, Any]) -> str:
    parts = []
    if "heldout" in r:
        parts.append(f"bits/byte={r['heldout']['all']['bits_per_byte']:.3f}")
    for subset, h in r.get("heldout_prefilter", {}).items():
        parts.append(f"{subset}_bits/byte={h['all']['bits_per_byte']:.3f}")
    if "steps" in r:
        parts.append(f"kept_steps={len(r['steps'])}")
    if "qa" in r:
        parts.append(f"qa_mc={r['qa']['mc_accuracy']:.3f}")
        if "exact_match" in r["qa"]:
            parts.append(f"qa_em={r['qa']['exact_match']:.3f}")
    if "posttrain" in r:
        pt = r["posttrain"]
        parts += [f"{k}={pt[k]:.3f}" for k in ("qa_exact_match", "pref_accuracy") if k in pt]
    if "toxicity" in r:
        parts.append(f"exp_max_tox={r['toxicity']['expected_max_toxicity']:.3f}")
    return " ".join(parts) + f" ({r['seconds']}s)"


def plot_rows(results: dict[str, Any]) -> dict[str, list[dict]]:
    """Flat DVC plot series (one row per bar) so ``dvc plots diff`` compares runs: file stem -> rows."""
    bpb, qa = [], []
    for name, r in results["models"].items():
        for domain, m in r.get("heldout", {}).items():
            bpb.append({"series": f"{name} · {domain}", "model": name, "domain": domain,
                        "bits_per_byte": round(m["bits_per_byte"], 5)})
        for key in ("mc_accuracy", "exact_match"):
            if key in r.get("qa", {}):
                qa.append({"series": f"{name} · {key}", "model": name, "metric": key,
                           "accuracy": round(r["qa"][key], 5)})
        for part, c in r.get("qa", {}).get("coverage", {}).items():
            if isinstance(c, dict) and c["mc_accuracy"] is not None:
                key = f"mc_accuracy_{part}"
                qa.append({"series": f"{name} · {key}", "model": name, "metric": key,
                           "accuracy": round(c["mc_accuracy"], 5)})
    return {"bits_per_byte": bpb, "qa_accuracy": qa}


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``evaluate``: every model of ``evaluate.models`` on ``io.heldout`` and ``io.qa``; sample
    generations → ``io.samples``, DVC plot series → ``io.plots``."""
    import json

    synthetic = io.synthetic if "synthetic" in io and (Path(io.synthetic) / MANIFEST).is_file() else None
    prefilter = {k: io.get(f"heldout_{k}") for k in p.evaluate.prefilter.subsets}
    # io ckpt_<model>: the checkpoint dir of the training stage that made evaluate.models.<model>
    checkpoints = {k.removeprefix("ckpt_"): v for k, v in io.items() if k.startswith("ckpt_")}
    results, rows = evaluate_models(p.evaluate, io.heldout, io.qa, p.run.seed, condition=p.condition,
                                    synthetic_dir=synthetic, ex=ex, prefilter=prefilter, checkpoints=checkpoints)
    if "steps" in io:
        write_tsv({n: r["steps"] for n, r in results["models"].items() if "steps" in r}, io.steps)
    io.samples.parent.mkdir(parents=True, exist_ok=True)
    io.samples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    io.plots.mkdir(parents=True, exist_ok=True)
    for stem, series in plot_rows(results).items():
        (io.plots / f"{stem}.json").write_text(json.dumps(series, indent=1) + "\n")
    return results
