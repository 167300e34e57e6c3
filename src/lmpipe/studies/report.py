"""A study's results as JSON (``studies/results/NAME.json``) and one self-contained page (``reports/studies/NAME.html``)."""

from __future__ import annotations

import base64
import io
import json
import os
from html import escape
from pathlib import Path
from typing import Any

VERDICT_COLOUR = {"holds": "#1a7f37", "contradicted": "#cf222e", "inconclusive": "#9a6700"}


def write(results: dict[str, Any], root: Path) -> tuple[Path, Path]:
    name = results["label"]
    js = root / "studies" / "results" / f"{name}.json"
    page = root / "reports" / "studies" / f"{name}.html"
    for path, text in ((js, json.dumps(results, indent=1) + "\n"), (page, html(results))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return js, page


def _fmt(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else escape(str(x))


def _ci(ci: list[Any]) -> str:
    return "–" if ci[0] is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _metric_plot(results: dict[str, Any], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 0.5 + 0.45 * len(results["arms"])))
    for i, a in enumerate(results["arms"].values()):
        m = a["metrics"][metric]
        ax.scatter(list(m["values"].values()), [i] * len(m["values"]), color="0.6", s=14, zorder=2)
        if m["mean"] is not None:
            lo, hi = m["ci"]
            err = None if lo is None else [[m["mean"] - lo], [hi - m["mean"]]]
            ax.errorbar(
                m["mean"], i, xerr=err, fmt="o", color="C0" if not a["control"] else "k", capsize=4, zorder=3
            )
    ax.set_yticks(range(len(results["arms"])), list(results["arms"]))
    ax.set_xlabel(f"{metric} (mean, 95 % CI; grey: seeds)")
    return _png(fig)


def _curve_plot(name: str, curve: dict[str, dict[str, list]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (arm, seeds) in enumerate(curve.items()):
        runs = [np.asarray(pts, dtype=float) for pts in seeds.values() if pts]
        for r in runs:
            ax.plot(r[:, 0], r[:, 1], color=f"C{i}", alpha=0.25, lw=0.8)
        if runs:  # mean over seeds at the steps every seed logged
            common = sorted(set.intersection(*(set(r[:, 0]) for r in runs)))
            mean = [np.mean([r[r[:, 0] == x, 1][-1] for r in runs]) for x in common]
            ax.plot(common, mean, color=f"C{i}", lw=2, label=f"{arm} (mean of {len(runs)})")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    return _png(fig)


def html(r: dict[str, Any]) -> str:
    claims = "".join(
        f"<tr><td>{escape(c['claim'])}<br><small>{escape(c['source'])}</small></td><td>{escape(c['metric'])}</td>"
        f"<td><code>{escape(c['expect'])}</code></td><td>{_fmt(c['effect'])}</td><td>{_ci(c['ci'])}</td>"
        f"<td>{_fmt(c.get('d_z'), 3)}</td><td>{c['n']}</td>"
        f"<td style='color:{VERDICT_COLOUR[c['verdict']]};font-weight:bold'>{c['verdict']}</td></tr>"
        for c in r["claims"]
    )
    sections = []
    for m, spec in r["metrics"].items():
        rows = ""
        for arm, a in r["arms"].items():
            v = a["metrics"][m]
            vc = v.get("vs_control")
            rows += (
                f"<tr><td>{escape(arm)}{' (control)' if a['control'] else ''}</td><td>{v['n']}</td>"
                f"<td>{_fmt(v['mean'])}</td><td>{_ci(v['ci'])}</td>"
                f"<td>{_fmt(vc['effect']) if vc else ''}</td><td>{_ci(vc['ci']) if vc else ''}</td>"
                f"<td>{', '.join(f'{s}: {_fmt(x)}' for s, x in v['values'].items())}</td></tr>"
            )
        sections.append(
            f"<h3>{escape(m)} <small><code>metrics/{escape(spec['path'].split('.', 1)[0])}.json: "
            f"{escape(spec['path'].split('.', 1)[-1])}</code> ({spec['better']} is better)</small></h3>"
            "<table><tr><th>arm</th><th>n</th><th>mean</th><th>95 % CI</th><th>Δ vs control (paired)</th>"
            f"<th>95 % CI of Δ</th><th>per seed</th></tr>{rows}</table>{_metric_plot(r, m)}"
        )
    curves = "".join(_curve_plot(n, c) for n, c in r["curves"].items() if any(c.values()))
    arms = "".join(
        f"<li><b>{escape(a)}</b>{' (control)' if x['control'] else ''}: {escape(x['description'])} "
        f"<code>{escape(json.dumps(x['params']))}</code></li>"
        for a, x in r["arms"].items()
    )
    counts = {v: sum(c["verdict"] == v for c in r["claims"]) for v in VERDICT_COLOUR}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    failed = [c for c in r["claims"] if c["verdict"] != "holds"]
    summary_html = (
        f"<p><b>Claims: {summary or 'none'}.</b>"
        + (
            " Not every expected ordering reproduced at this scale: see the table and notes."
            if failed
            else ""
        )
        + "</p>"
        + (f"<p><b>Notes:</b> {escape(r.get('notes') or '')}</p>" if r.get("notes") else "")
    )
    missing = (
        f"<p class=warn>Missing experiments (not finished): {escape(', '.join(r['missing']))}</p>"
        if r["missing"]
        else ""
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Study {escape(r["study"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top}}th{{background:#f4f4f4}}.warn{{color:#cf222e}}small{{color:#555}}</style></head><body>
<h1>Study <code>{escape(r["study"])}</code>: {escape(r["title"])}</h1>
<p>{escape(r["description"])}</p>
<p>Profile <code>{escape(str(r["profile"]))}</code>, run up to stage <code>{escape(r["target"])}</code>,
seeds {escape(str(r["seeds"]))} (set as <code>{escape(r["seed_param"])}</code>); every (arm, seed) is one DVC experiment.
Intervals: {escape(r["interval"])}. A claim <em>holds</em> when its interval excludes zero in the expected
direction, is <em>contradicted</em> when it excludes zero the other way, and is <em>inconclusive</em> when it spans zero.</p>
{summary_html}{missing}<h2>Arms</h2><ul>{arms}</ul>
<h2>Claims</h2><table><tr><th>claim</th><th>metric</th><th>expected</th><th>effect (paired Δ)</th>
<th>95 % CI</th><th>d<sub>z</sub></th><th>seeds</th><th>verdict</th></tr>{claims}</table>
<h2>Metrics</h2>{"".join(sections)}
{"<h2>Curves</h2>" + curves if curves else ""}
</body></html>
"""
