"""Every pipeline stage, declared once: its library entry, the paths it reads and writes, the params it reads.

``dvc.yaml`` is generated from this table (``python -m stages.registry --write``; ``--check`` fails when the
committed file is stale). A stage's code deps are not written by hand: they are the import closure of its
entry module inside ``src/`` (:mod:`lmpipe.importgraph`), so editing any module a stage runs makes it stale.

To add a stage: write ``run(p, io, ex) -> dict`` in a library module, add a :class:`Stage` here, regenerate.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
ENTRY_FILES = ("stages/__init__.py", "stages/__main__.py")  # what `python -m stages` runs before the entry


@dataclass(frozen=True)
class Out:
    path: str
    persist: bool = False  # kept across runs: a killed stage resumes from what it finished
    cache: bool = True  # False: small or regenerated files DVC need not store
    why: str = ""  # rendered as a comment in dvc.yaml


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module" or "module:function" with run(p, io, ex) -> stats
    about: str  # one line: what the stage does (dvc.yaml comment, `lmpipe stages`)
    inputs: dict[str, str] = field(default_factory=dict)  # io name -> path read (a DVC dep)
    outputs: dict[str, Out | str] = field(default_factory=dict)  # io name -> path written (a DVC out)
    params: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # read but not passed as io (e.g. model dirs named in params)
    paths: dict[str, str] = field(default_factory=dict)  # io paths that are neither deps nor outs
    data: tuple[str, ...] = ()  # package data the code reads (templates, prompts, word lists)
    live: str | None = None  # a DVCLive folder: its metrics.json and plots are declared too
    plots: tuple[dict, ...] = ()
    gate: bool = False  # great-expectations gate on io.out; its report goes to reports/gates/<name>

    def io(self) -> dict[str, str]:
        out = {**self.inputs, **{k: v.path if isinstance(v, Out) else v for k, v in self.outputs.items()}}
        out.update(self.paths)
        if self.live:
            out["live"] = self.live
        if self.gate:
            out["gate_report"] = f"reports/gates/{self.name}"
        return out


def _param(dotted: str, default: object = None) -> object:
    """A decision in params.yaml that changes the graph itself (rendering reads it; test_registry checks it)."""
    path = ROOT / "params.yaml"
    node = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return default if node is None else node


# posttrain.residual: the models it combines are params (defaults: the paper's set-up in this run); sft_base, the
# instruct model of the base, is in the graph only while the residual takes its instruct model from it.
RESIDUAL = {k: str(_param(f"posttrain.residual.{k}", v)) for k, v in
            (("target", "models/cpt"), ("instruct", "models/sft_base"), ("base", "models/pretrain"))}
SFT_BASE = RESIDUAL["instruct"] == "models/sft_base"
# A file pretrain always depends on and reads only when mixture.from_tune says so: the flag never changes the
# graph, and a rerun with the flag off finds its finished checkpoint.
TUNED = "data/tune/best_mixture.yaml"
# cpt.replay_from_cmr: cpt reads the cmr grid's advice, so the grid is upstream of cpt only then. Off (the
# default), the grid, the longest stage after pretraining, runs beside cpt instead of before it; the cpt
# stage refuses the flag when dvc.yaml lacks the dep (re-render after flipping it).
REPLAY = {"replay": "data/cmr/replay.yaml"} if _param("cpt.replay_from_cmr", False) else {}
# filter.score.quality.enabled: score reads the learned rater, so DVC must see the rater stage's model as its dep
RATER = {"rater": "models/quality"} if _param("filter.score.quality.enabled", False) else {}
GATES = ("gates.enabled", "gates.sample_docs", "gates.domains")
TRAIN_LIVE_X = "step"
WORDLIST = "src/lmpipe/filters/wordlists/ldnoobw-en.txt"
# the pre-filter held-out sample (ingest.holdout) and the part of it the filter keeps; evaluate scores both
HELDOUT_RAW, HELDOUT_CLEAN = "data/heldout_raw/docs", "data/heldout_clean/docs"
# evaluate's held-out curve over the models kept at train.keep_steps: in metrics/ so git (and a study) holds it
STEPS_TSV = "metrics/evaluate_steps.tsv"  # default toxicity word list (demo noise, score, evaluate)

STAGES: tuple[Stage, ...] = (
    Stage("demo", "lmpipe.demo.corpus", "the seeded demo corpus (5 domains, planted noise) and its QA set",
          outputs={"raw": "data/raw", "eval": "data/eval"}, params=("run.seed", "demo"), data=(WORDLIST,)),
    Stage("ingest", "lmpipe.ingest", "every source → one sharded document dataset; bad records quarantined",
          inputs={"raw": "data/raw"},
          outputs={"out": Out("data/ingest/docs", persist=True, why="finished units survive a crash"),
                   "rejected": Out("data/ingest/rejected", persist=True),
                   "heldout": Out(HELDOUT_RAW, persist=True, why="ingest.holdout: drawn before any filter")},
          params=("ingest", *GATES, "gates.stages.ingest"), gate=True,
          data=("src/lmpipe/web/data",)),  # the URL filter's shipped lists
    Stage("label", "lmpipe.quality.label", "an LLM rates a per-domain sample 0-5 on each quality rubric dimension",
          inputs={"docs": "data/ingest/docs"},
          outputs={"out": Out("data/quality/labels", persist=True, why="finished shards survive a crash; "
                              "LLM answers are reused from llm.cache"),
                   "rejected": Out("data/quality/rejected", persist=True)},
          params=("llm", "quality.label"), data=("src/lmpipe/quality/prompts",)),
    Stage("rater", "lmpipe.quality.rater", "a hashed n-gram ridge rater per dimension, trained on the LLM labels",
          inputs={"labels": "data/quality/labels"}, outputs={"out": "models/quality"},
          params=("quality.label.dimensions", "quality.label.seed", "quality.rater")),
    Stage("score", "lmpipe.filters.score", "tag once: every quality measurement stored beside each document",
          inputs={"docs": "data/ingest/docs", "heldout": HELDOUT_RAW, **RATER}, deps=("data/eval", "data/raw/labels"),
          outputs={"out": Out("data/scored/docs", persist=True), "rejected": Out("data/scored/rejected", persist=True),
                   "models": "models/filter", "heldout_scored": Out("data/heldout_raw/scored", persist=True),
                   "heldout_scored_rejected": Out("data/heldout_raw/scored_rejected", persist=True)},
          params=("filter.score",), data=(WORDLIST,)),
    Stage("filter", "lmpipe.filters.select", "decide later: per-domain thresholds on the stored scores",
          inputs={"scored": "data/scored/docs", "heldout_scored": "data/heldout_raw/scored"},
          outputs={"out": Out("data/filtered/docs", persist=True), "rejected": Out("data/filtered/rejected", persist=True),
                   "plots": Out("plots/filter", cache=False),
                   "heldout_clean": Out(HELDOUT_CLEAN, persist=True, why="the held-out docs the rules keep"),
                   "heldout_rejected": Out("data/heldout_clean/rejected", persist=True)},
          params=("filter.select", "filter.score.c4", *GATES, "gates.stages.filter"), gate=True),
    Stage("dedup", "lmpipe.dedup.passes", "exact + MinHash near-duplicate removal, one survivor per cluster",
          inputs={"docs": "data/filtered/docs"},
          outputs={"out": Out("data/dedup/docs", persist=True, why="signatures are reused from data/dedup/.state"),
                   "rejected": Out("data/dedup/rejected", persist=True), "plots": Out("plots/dedup", cache=False)},
          params=("dedup", *GATES, "gates.stages.dedup"), gate=True),
    Stage("refine", "lmpipe.refine.run", "ProX-style edit programs from an LLM, interpreted by our code (off: links)",
          inputs={"docs": "data/dedup/docs"},
          outputs={"out": Out("data/refine/docs", persist=True, why="finished shards survive a crash"),
                   "rejected": Out("data/refine/rejected", persist=True)},
          params=("run.seed", "llm", "refine"), data=("src/lmpipe/refine/prompts",)),
    Stage("tokenize", "lmpipe.tokenization", "BPE tokenizer (trained or reused), held-out split, packed tokens",
          inputs={"docs": "data/refine/docs"},
          outputs={"tokens": Out("data/tokens", persist=True), "tokenizer": Out("models/tokenizer", persist=True),
                   "heldout": Out("data/heldout/docs", persist=True)},
          params=("tokenize", "condition.control", "condition.meco"),
          data=(WORDLIST,)),  # segment-level PHF scores recompute the word-list fraction
    Stage("pretrain", "lmpipe.pretrain", "a Llama-style model trained with Lightning on the mixture; HF export",
          inputs={"tokens": "data/tokens", "tokenizer": "models/tokenizer", "tuned": TUNED},
          outputs={"out": "models/pretrain",
                   "ckpt": Out("models/checkpoints/pretrain", persist=True, cache=False,
                               why="a killed run resumes from latest.ckpt, step for step")},
          params=("run.seed", "model", "train", "mixture", "condition.meco"), live="dvclive/pretrain"),
    Stage("augment", "lmpipe.synth.augment", "EntiGraph relation texts and thought trajectories from an LLM",
          inputs={"docs": "data/dedup/docs"},
          outputs={"out": Out("data/augment/docs", persist=True, why="LLM answers are reused from llm.cache"),
                   "rejected": Out("data/augment/rejected", persist=True)},
          params=("run.seed", "llm", "augment", "tokenize.val_fraction"), data=("src/lmpipe/synth/prompts",)),
    Stage("tune", "lmpipe.tuning", "Optuna study over the mixture weights by short proxy runs",
          inputs={"tokens": "data/tokens", "heldout": "data/heldout/docs", "tokenizer": "models/tokenizer"},
          outputs={"out": Out("data/tune", persist=True, why="the study DB: a killed or extended study resumes"),
                   "plots": Out("plots/tune", cache=False)},
          params=("run.seed", "tune", "model", "mixture.weights")),
    Stage("cpt_tokenize", "lmpipe.continual:tokenize", "the new (synthetic) documents packed with the parent's tokenizer",
          inputs={"docs": "data/augment/docs", "tokenizer": "models/tokenizer"},
          outputs={"tokens": Out("data/tokens-cpt", persist=True)},
          params=("tokenize", "cpt.val_fraction")),
    Stage("cmr", "lmpipe.mixing.cmrgrid", "CPT replay-ratio grid → scaling-law fit → critical general:domain ratio",
          inputs={"tokens": "data/tokens", "new_tokens": "data/tokens-cpt", "tokenizer": "models/tokenizer"},
          deps=("models/pretrain",),
          outputs={"out": Out("data/cmr", persist=True, why="finished grid runs are kept: a killed grid resumes"),
                   "plots": Out("plots/cmr", cache=False)},
          params=("run.seed", "model", "cpt.train", "cpt.mixture", "cmr")),
    Stage("cpt", "lmpipe.continual", "continual pretraining: replay + new domain, LR re-warm and re-decay",
          inputs={"tokens": "data/tokens", "new_tokens": "data/tokens-cpt", "tokenizer": "models/tokenizer",
                  **REPLAY},
          deps=("models/pretrain",),
          outputs={"out": "models/cpt",
                   "ckpt": Out("models/checkpoints/cpt", persist=True, cache=False,
                               why="a killed run resumes (same params, data and parent)")},
          params=("run.seed", "model", "cpt.train", "cpt.mixture", "cpt.replay_from_cmr"), live="dvclive/cpt"),
    Stage("sft", "lmpipe.posttrain.sft", "supervised fine-tuning (TRL SFTTrainer): assistant-only loss, packed chats",
          deps=("models/cpt", "data/raw/instruct", "data/eval"),
          outputs={"out": "models/sft",
                   "ckpt": Out("models/checkpoints/sft", persist=True, cache=False,
                               why="HF Trainer checkpoints: a killed run resumes (same params, data and base)"),
                   "data": Out("data/posttrain/sft", cache=False, why="the chats trained on and the quarantine")},
          params=("run.seed", "posttrain.data", "posttrain.sft"), live="dvclive/sft"),
    Stage("dpo", "lmpipe.posttrain.dpo", "preference optimisation (TRL DPO/IPO/SimPO) on on-policy pairs",
          deps=("models/sft", "data/raw/instruct", "data/eval"),
          outputs={"out": "models/dpo",
                   "ckpt": Out("models/checkpoints/dpo", persist=True, cache=False, why="a killed run resumes"),
                   "data": Out("data/posttrain/dpo", persist=True, cache=False,
                               why="sampled pairs are reused when the SFT model and prompts are unchanged")},
          paths={"cache": "data/.cache/dpo_ref_logps"},
          params=("run.seed", "posttrain.data", "posttrain.dpo"), live="dvclive/dpo"),
    Stage("rlvr", "lmpipe.posttrain.rlvr", "RL with verifiable rewards (TRL GRPO): math-verify and exact match",
          deps=("models/dpo", "data/raw/instruct", "data/eval"),
          outputs={"out": "models/rlvr",
                   "ckpt": Out("models/checkpoints/rlvr", persist=True, cache=False, why="a killed run resumes"),
                   "data": Out("data/posttrain/rlvr", cache=False)},
          params=("run.seed", "posttrain.data", "posttrain.rlvr"), live="dvclive/rlvr"),
    *([Stage("sft_base", "lmpipe.posttrain.sft:run_base",
                   "the sft recipe on the residual's base (pretrain): the instruct model the residual comes from",
                   deps=(RESIDUAL["base"], "data/raw/instruct", "data/eval"),
                   outputs={"out": "models/sft_base",
                            "ckpt": Out("models/checkpoints/sft_base", persist=True, cache=False,
                                        why="a killed run resumes"),
                            "data": Out("data/posttrain/sft_base", cache=False)},
                   params=("run.seed", "posttrain.data", "posttrain.sft", "posttrain.residual.base"),
                   live="dvclive/sft_base")] if SFT_BASE else []),
    Stage("residual", "lmpipe.posttrain.residual",
          "instruction residual θ_target + (θ_instruct − θ_base): cpt made an instruct model without SFT on it",
          deps=tuple(dict.fromkeys(RESIDUAL.values())), outputs={"out": "models/residual"},
          params=("posttrain.residual",)),
    Stage("evaluate", "lmpipe.evaluation.run", "per-domain loss, closed-book QA, forgetting, toxicity, samples",
          inputs={"heldout": "data/heldout/docs", "qa": "data/eval/fiction_qa.jsonl", "synthetic": "data/augment/docs",
                  "heldout_raw": HELDOUT_RAW, "heldout_clean": HELDOUT_CLEAN,
                  # ckpt_<model>: the dir whose steps/ hold the models kept at train.keep_steps (a step curve each)
                  "ckpt_pretrain": "models/checkpoints/pretrain", "ckpt_cpt": "models/checkpoints/cpt"},
          deps=("models/pretrain", "models/cpt", "models/sft", "models/dpo", "models/rlvr", "models/residual",
                "models/filter", "data/raw/labels",  # labels: the demo's fallback toxicity prompts
                "data/eval/posttrain_qa.jsonl", "data/eval/math_heldout.jsonl", "data/eval/pref_heldout.jsonl"),
          outputs={"samples": Out("reports/samples.jsonl", cache=False)},
          paths={"plots": "plots/evaluate", "steps": STEPS_TSV},
          params=("run.seed", "evaluate", "condition"), data=(WORDLIST,),
          plots=(
              {"plots/evaluate/bits_per_byte.json": {"cache": False, "template": "bar_horizontal",
                                                     "x": "bits_per_byte", "y": "series",
                                                     "title": "Held-out bits per byte (model · domain)"}},
              {"plots/evaluate/qa_accuracy.json": {"cache": False, "template": "bar_horizontal", "x": "accuracy",
                                                   "y": "series", "title": "Closed-book QA accuracy (model · metric)"}},
              {STEPS_TSV: {"cache": False, "x": "step", "title": "Held-out bits per byte at kept steps"}},
          )),
    Stage("report", "lmpipe.report", "one self-contained HTML report of the run",
          inputs={"evaluate": "metrics/evaluate.json", "samples": "reports/samples.jsonl"},
          deps=tuple(f"metrics/{s}.json" for s in ("ingest", "filter", "dedup", "refine", "augment", "tokenize",
                                                   "pretrain", "sft", "dpo", "rlvr", "residual",
                                                   *(("sft_base",) if SFT_BASE else ()))),
          outputs={"out": Out("reports/index.html", cache=False)},
          paths={"metrics": "metrics"},
          params=("report", "mixture"), data=("src/lmpipe/templates/report.html.j2",)),
)


def by_name() -> dict[str, Stage]:
    return {s.name: s for s in STAGES}


def code_deps(stage: Stage) -> list[str]:
    from lmpipe.importgraph import closure

    module = stage.entry.partition(":")[0]
    files = closure([module, "lmpipe.contract"], SRC)
    return [*ENTRY_FILES, *(str(f.relative_to(ROOT)) for f in files), *stage.data]


def command(stage: Stage) -> str:
    return " ".join(["python -m stages", stage.name, stage.entry, *(f"{k}={v}" for k, v in stage.io().items())])


def dvc_stage(stage: Stage) -> dict:
    entry: dict = {"desc": stage.about, "cmd": command(stage)}
    entry["deps"] = [*code_deps(stage), *stage.inputs.values(), *stage.deps]
    if stage.params:
        entry["params"] = list(stage.params)
    outs: list = []
    for o in stage.outputs.values():
        o = o if isinstance(o, Out) else Out(o)
        flags = {k: v for k, v in (("persist", o.persist), ("cache", o.cache)) if v != Out.__dataclass_fields__[k].default}
        outs.append({o.path: flags} if flags else o.path)
    if stage.gate:
        outs.append({f"reports/gates/{stage.name}": {"cache": False}})
    entry["outs"] = outs
    metrics: list = [{f"metrics/{stage.name}.json": {"cache": False}}]
    plots = list(stage.plots)
    if stage.live:
        metrics.append({f"{stage.live}/metrics.json": {"cache": False, "persist": True}})
        plots.append({f"{stage.live}/plots/metrics": {"x": TRAIN_LIVE_X, "cache": False, "persist": True}})
    entry["metrics"] = metrics
    if plots:
        entry["plots"] = plots
    return entry


HEADER = """\
# GENERATED from stages/registry.py by `python -m stages.registry --write`: edit the registry, not this file.
# Each stage runs `python -m stages <name> <library entry> io=path ...`; code deps are the entry's import closure.
# `dvc repro` reruns only stale stages; `python -m flows.pipeline` runs them as Prefect tasks.
"""


def render() -> str:
    doc = {"stages": {s.name: dvc_stage(s) for s in STAGES}}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write dvc.yaml from the registry")
    ap.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the registry")
    args = ap.parse_args(argv)
    text, path = render(), ROOT / "dvc.yaml"
    if args.check:
        if not path.exists() or path.read_text() != text:
            sys.exit("dvc.yaml is stale: run `python -m stages.registry --write`")
        print("dvc.yaml is current")
    elif args.write:
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)} ({len(STAGES)} stages)")
    else:
        for s in STAGES:
            print(f"{s.name:14} {s.entry:30} {s.about}")


if __name__ == "__main__":
    main()
