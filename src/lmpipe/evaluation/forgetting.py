"""Forgetting: how a model's metrics on *old* domains moved relative to the checkpoint it was trained from.

Sign convention: a positive ``bits_per_byte_delta`` (child minus parent) means the child got worse on that
domain, i.e. it forgot; ``mean_bits_per_byte_increase`` averages that over the old domains. For QA the
deltas are child minus parent too, so a negative accuracy delta means lost knowledge.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from lmpipe.evaluation.heldout import ALL


def forgetting(child: dict[str, Any], parent: dict[str, Any], old_domains: list[str] | None = None) -> dict[str, Any]:
    """Compare two ``evaluate_model`` results (``heldout`` and ``qa`` sections)."""
    p_held, c_held = parent.get("heldout", {}), child.get("heldout", {})
    domains = old_domains if old_domains is not None else [d for d in p_held if d != ALL]
    per_domain, missing = {}, []
    for d in domains:
        if d not in p_held or d not in c_held:
            missing.append(d)
            continue
        p, c = p_held[d], c_held[d]
        per_domain[d] = {
            "bits_per_byte_delta": c["bits_per_byte"] - p["bits_per_byte"],
            "bits_per_byte_relative": (c["bits_per_byte"] - p["bits_per_byte"]) / p["bits_per_byte"],
            "loss_delta": c["loss"] - p["loss"],
        }
    out: dict[str, Any] = {"domains": per_domain}
    if per_domain:
        out["mean_bits_per_byte_increase"] = fmean(v["bits_per_byte_delta"] for v in per_domain.values())
    if missing:
        out["missing_domains"] = missing  # named, not silently skipped
    p_qa, c_qa = parent.get("qa", {}), child.get("qa", {})
    for key in ("mc_accuracy", "exact_match"):
        if key in p_qa and key in c_qa:
            out[f"{key}_delta"] = c_qa[key] - p_qa[key]
    return out
