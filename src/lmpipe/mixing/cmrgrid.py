"""Stage ``cmr``: a grid of short CPT runs over (replay ratio, steps), the replay-ratio law fitted to their
old-domain losses, and the critical general:domain ratio for the ``cpt`` stage's budget.

Each grid point is the ``cpt`` stage's own run (:func:`lmpipe.continual.continue_pretraining`: same parent,
data, model and schedule shape) shortened to ``steps`` and with the replay ratio ``r`` set: the old (replayed)
domains keep their relative ``cpt.mixture`` weights and sum to ``r``, the new domains share ``1 - r``. A run is
scored by the mean loss over the old domains' held-out windows (each domain alike). The law
``L(r, d) = E + A d^-alpha + B r^-beta`` (:mod:`lmpipe.cmr`) is fitted to the points; the critical ratio is the
smallest ``r`` whose predicted old-domain loss at the budget stays within ``cmr.tolerance`` of the parent's.

Outputs (``data/cmr``): ``points.jsonl`` (one row per finished run: a killed grid resumes and reruns only what is
missing; a changed grid, parent or data starts over), ``law.json``, and ``replay.yaml``, the suggested ratio the
``cpt`` stage uses when ``cpt.replay_from_cmr`` is set. ``plots/cmr/fit.png``: points and fitted curves.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmpipe.cmr import Law, fit

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor
    from lmpipe.mixing.config import MixtureConfig

REPLAY = "replay.yaml"
POINTS = "points.jsonl"


def replay_weights(weights: dict[str, float], new_domains: list[str], ratio: float) -> dict[str, float]:
    """``weights`` rescaled so the old domains sum to ``ratio`` and the new ones to ``1 - ratio``."""
    if not 0 < ratio < 1:
        raise ValueError(f"replay ratio must lie in (0, 1); got {ratio}")
    new = {d: w for d, w in weights.items() if d in new_domains and w > 0}
    old = {d: w for d, w in weights.items() if d not in new_domains and w > 0}
    if not new or not old:
        raise ValueError(
            f"a replay ratio needs a weighted new domain (of {new_domains}) and a weighted old one; "
            f"got weights {weights}"
        )
    out = {d: ratio * w / sum(old.values()) for d, w in old.items()}
    return out | {d: (1 - ratio) * w / sum(new.values()) for d, w in new.items()}


def read_replay(path: str | Path) -> float:
    """The suggested replay ratio from the cmr stage's ``replay.yaml``."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"cpt.replay_from_cmr is set but {path} does not exist: run the cmr stage first"
        )
    ratio = (yaml.safe_load(path.read_text()) or {}).get("replay_ratio")
    if not isinstance(ratio, int | float) or not 0 < ratio < 1:
        raise ValueError(f"{path}: expected replay_ratio in (0, 1), got {ratio!r}")
    return float(ratio)


def cpt_mixture(mixture: MixtureConfig, new_domains: list[str], replay: str | Path) -> MixtureConfig:
    """``mixture`` with the cmr stage's suggested replay ratio applied."""
    weights = replay_weights(mixture.weights, new_domains, read_replay(replay))
    return mixture.model_copy(update={"weights": weights})


def old_domain_loss(
    model_dir: str | Path, index: Any, domains: list[str], seq_len: int, batch_size: int, n: int, seed: int
) -> float:
    """Mean over ``domains`` of the model's loss on ``n`` fixed held-out batches of each."""
    from lmpipe.mixing.reweight import domain_batches, model_losses

    losses = model_losses(model_dir, domain_batches(index, domains, seq_len, batch_size, n, seed))
    return float(np.mean([losses[d] for d in domains]))


def _grid_key(p: Params, data: list[str], parent: str) -> str:
    from lmpipe.training.resume import run_fingerprint

    return run_fingerprint(
        p.model.model_dump(),
        p.cpt.train.model_dump(),
        p.cpt.mixture.model_dump(),
        p.cmr.model_dump(include={"eval_batches"}),
        data,
        parent,
        p.run.seed,
    )


def run_grid(p: Params, tokens: Path, new_tokens: Path, tokenizer: Path, out: Path) -> dict[str, Any]:
    """Train and score every grid point not in ``out/points.jsonl`` yet; returns the rows in grid order."""
    from lmpipe.continual import continue_pretraining, model_fingerprint
    from lmpipe.documents import sha256_file
    from lmpipe.mixture import TokenIndex

    cfg, cpt = p.cmr, p.cpt
    seed = cpt.train.seed if cpt.train.seed is not None else p.run.seed
    new_domains = TokenIndex.load(new_tokens).domains("train")
    old_index = TokenIndex.load(tokens)
    replayed = sorted(d for d, w in cpt.mixture.weights.items() if w > 0 and d not in new_domains)
    # scored on the replayed domains that have a held-out window (a tiny domain may have none)
    held = set(old_index.domains("val")) if "val" in old_index.splits else set()
    old = [d for d in replayed if d in held and old_index.tokens(d, "val") > cpt.train.seq_len]
    if not old:
        raise ValueError(
            f"cmr: no replayed domain of {replayed} has a held-out window of {cpt.train.seq_len + 1} "
            f"tokens in {tokens} to score forgetting on"
        )
    parent = str(cpt.train.init_from)
    key = _grid_key(
        p,
        [sha256_file(tokens / "index.json"), sha256_file(new_tokens / "index.json")],
        model_fingerprint(parent),
    )
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "grid.json"
    if not meta.exists() or json.loads(meta.read_text()).get("key") != key:  # another grid: start over
        (out / POINTS).unlink(missing_ok=True)
        meta.write_text(json.dumps({"key": key}) + "\n")
    done = {(r["ratio"], r["steps"]): r for r in map(json.loads, _lines(out / POINTS))}

    def score(model: str | Path) -> float:
        return old_domain_loss(
            model, old_index, old, cpt.train.seq_len, cpt.train.batch_size, cfg.eval_batches, seed
        )

    parent_loss = done[0.0, 0]["loss"] if (0.0, 0) in done else None
    if parent_loss is None:
        parent_loss = score(parent)
        _append(out / POINTS, {"ratio": 0.0, "steps": 0, "tokens": 0, "loss": parent_loss, "parent": True})
    trained = 0
    for ratio in cfg.ratios:
        for steps in cfg.steps:
            if (ratio, steps) in done:
                continue
            scratch = out / ".runs" / f"r{ratio}-s{steps}"
            shutil.rmtree(scratch, ignore_errors=True)
            # the cpt schedule's shape over the shorter run (its warmup must end before the run does)
            schedule = cpt.train.schedule.model_copy(
                update={"warmup_steps": min(cpt.train.schedule.warmup_steps, steps - 1)}
            )
            train = cpt.train.model_copy(
                update={"max_steps": steps, "val_every": steps, "ckpt_every": steps, "schedule": schedule}
            )
            mixture = cpt.mixture.model_copy(
                update={"weights": replay_weights(cpt.mixture.weights, new_domains, ratio)}
            )
            point = cpt.model_copy(update={"train": train, "mixture": mixture})
            stats = continue_pretraining(
                p.model,
                point,
                [tokens, new_tokens],
                tokenizer,
                seed=seed,
                ckpt_dir=scratch / "ckpt",
                log_dir=None,
                export_dir=scratch / "model",
                progress=False,
            )
            row = {
                "ratio": ratio,
                "steps": steps,
                "tokens": stats["tokens"],
                "loss": score(scratch / "model"),
            }
            _append(out / POINTS, row)
            done[ratio, steps] = row
            shutil.rmtree(scratch, ignore_errors=True)
            trained += 1
    shutil.rmtree(out / ".runs", ignore_errors=True)
    rows = [done[r, s] for r in cfg.ratios for s in cfg.steps]
    return {
        "rows": rows,
        "parent_loss": parent_loss,
        "trained": trained,
        "old_domains": old,
        "unscored_old_domains": sorted(set(replayed) - set(old)),
        "new_domains": new_domains,
    }


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:  # one line per finished run: a crash loses at most the run in progress
        f.write(json.dumps(row) + "\n")


def plot_fit(law: Law, rows: list[dict[str, Any]], budget: float, path: Path) -> str:
    """Old-domain loss against tokens, one colour per replay ratio: measured points and the fitted law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    d = np.geomspace(min(r["tokens"] for r in rows), max(budget, max(r["tokens"] for r in rows)), 100)
    for i, ratio in enumerate(sorted({r["ratio"] for r in rows})):
        pts = [r for r in rows if r["ratio"] == ratio]
        ax.scatter([r["tokens"] for r in pts], [r["loss"] for r in pts], color=f"C{i}", s=20)
        ax.plot(d, law.loss(ratio, d), color=f"C{i}", label=f"r = {ratio:g}")
    ax.axvline(budget, color="grey", ls=":", label="cpt budget")
    ax.set_xscale("log")
    ax.set_xlabel("CPT tokens")
    ax.set_ylabel("old-domain loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def suggest(law: Law, cfg: Any, budget: float, parent_loss: float) -> dict[str, Any]:
    """The critical ratio at ``budget`` and the ratio suggested to ``cpt`` (clipped to the measured grid)."""
    max_loss = parent_loss * (1 + cfg.tolerance)
    critical = law.critical_ratio(budget, max_loss)
    lo, hi = min(cfg.ratios), max(cfg.ratios)
    ratio = hi if critical is None else min(max(critical, lo), hi)
    return {
        "max_loss": max_loss,
        "critical_ratio": critical,
        "replay_ratio": ratio,
        "clipped": critical is None or not lo <= critical <= hi,
        "general_to_domain": f"{ratio:.3f}:{1 - ratio:.3f}",
    }


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Stage ``cmr``: the grid (resumable), the fit, the plot and ``replay.yaml``."""
    import yaml

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    grid = run_grid(p, io.tokens, io.new_tokens, io.tokenizer, io.out)
    rows = grid["rows"]
    law, rms = fit(*(np.array([r[k] for r in rows], dtype=float) for k in ("ratio", "tokens", "loss")))
    t = p.cpt.train
    budget = float((p.cmr.budget_steps or t.max_steps) * t.batch_size * t.seq_len * t.grad_accum)
    advice = suggest(law, p.cmr, budget, grid["parent_loss"])
    summary = {
        "law": law.as_dict(),
        "rms_rel_error": rms,
        "budget_tokens": budget,
        "parent_loss": grid["parent_loss"],
        **advice,
        "old_domains": grid["old_domains"],
        "unscored_old_domains": grid["unscored_old_domains"],
        "new_domains": grid["new_domains"],
        "points": len(rows),
        "runs_trained": grid["trained"],
    }
    (io.out / "law.json").write_text(json.dumps(summary, indent=2) + "\n")
    header = (
        f"# suggested replay ratio for cpt (old domains' share of the CPT mixture), from the law fitted to "
        f"{len(rows)} grid runs;\n# critical ratio {advice['critical_ratio']} keeps the old-domain loss within "
        f"{p.cmr.tolerance:.0%} of the parent's at {budget:.0f} tokens. Used when cpt.replay_from_cmr is true.\n"
    )
    frag = {
        "replay_ratio": round(advice["replay_ratio"], 6),
        "general_to_domain": advice["general_to_domain"],
    }
    (io.out / REPLAY).write_text(header + yaml.safe_dump(frag, sort_keys=False))
    summary["plot"] = plot_fit(law, rows, budget, Path(io.plots) / "fit.png")
    return summary
