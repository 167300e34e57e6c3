"""The run report links every study page with its claims' verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmpipe.report import build_report
from lmpipe.report_config import ReportConfig
from tests.test_report import inputs, run_dir  # noqa: F401


def test_study_pages_are_linked_with_verdicts(run_dir: Path) -> None:  # noqa: F811
    pages, results = run_dir / "reports" / "studies", run_dir / "studies" / "results"
    pages.mkdir(parents=True)
    results.mkdir(parents=True)
    for name in ("e_replay.reduced", "orphan"):
        (pages / f"{name}.html").write_text("<html></html>")
    claims = [
        {"claim": "Replay reduces forgetting", "verdict": "holds", "effect": 0.125, "ci": [0.05, 0.2]},
        {
            "claim": "Less replay, lower new-domain loss",
            "verdict": "inconclusive",
            "effect": -0.01,
            "ci": [None, None],
        },
    ]
    (results / "e_replay.reduced.json").write_text(json.dumps({"title": "Replay", "claims": claims}))
    out = run_dir / "reports" / "index.html"
    build_report(inputs(run_dir), ReportConfig(), out)
    html = out.read_text()
    rows = re.findall(
        r'<tr><td><a href="([^"]+)">([^<]+)</a></td><td>([^<]*)</td><td[^>]*>([^<]*)</td>'
        r"<td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
        html,
    )
    assert rows == [
        (
            "studies/e_replay.reduced.html",
            "e_replay.reduced",
            "Replay",
            "Replay reduces forgetting",
            "holds",
            "0.125",
            "[0.05, 0.2]",
        ),
        (
            "studies/e_replay.reduced.html",
            "e_replay.reduced",
            "Replay",
            "Less replay, lower new-domain loss",
            "inconclusive",
            "-0.01",
            "–",
        ),
        ("studies/orphan.html", "orphan", "", "", "no results file", "", ""),
    ]
    assert (out.parent / rows[0][0]).is_file()  # the link resolves from the report's folder
    assert '<a href="#studies">' in html


def test_no_study_pages_no_section(run_dir: Path) -> None:  # noqa: F811
    stats = build_report(inputs(run_dir), ReportConfig(), run_dir / "reports" / "index.html")
    assert "studies" not in stats["sections_missing"]
    assert 'id="studies"' not in (run_dir / "reports" / "index.html").read_text()
