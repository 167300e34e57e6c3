"""The run report: sections from real files, PNGs that contain plotted marks, graceful gaps, offline HTML
(checked in a real headless Chromium with networking disabled), and the offline `dvc plots` template."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lmpipe.report import ReportInputs, build_report
from lmpipe.report_config import ReportConfig
from tests.conftest import stage_cmd

ROOT = Path(__file__).resolve().parent.parent
C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two default colours


def evaluate_json() -> dict:
    def held(shift: float) -> dict:
        return {d: {"docs": 3, "tokens": 100, "bytes": 400, "loss": 2.0 + shift, "perplexity": math.exp(2 + shift),
                    "bits_per_byte": b + shift} for d, b in (("prose", 1.5), ("code", 1.2), ("all", 1.4))}

    return {
        "model_order": ["pretrain", "cpt"],
        "models": {
            "cpt": {"heldout": held(0.3), "qa": {"mc_accuracy": 0.61, "mc_accuracy_unnormalised": 0.55,
                                                 "exact_match": 0.42, "questions": 240},
                    "forgetting": {"parent": "pretrain", "domains": {"prose": {"bits_per_byte_delta": 0.3},
                                                                     "code": {"bits_per_byte_delta": 0.3}},
                                   "mean_bits_per_byte_increase": 0.3, "mc_accuracy_delta": 0.36},
                    "toxicity": {"expected_max_toxicity": 0.2, "toxicity_probability": 0.1, "mean_toxicity": 0.05,
                                 "prompts": 6, "samples_per_prompt": 4, "scorer": "wordlist-demo"},
                    "posttrain": {"qa_exact_match": 0.2, "pref_accuracy": 0.5, "format": "plain"}},
            "pretrain": {"heldout": held(0.0), "qa": {"mc_accuracy": 0.25, "mc_accuracy_unnormalised": 0.26,
                                                      "exact_match": 0.0, "questions": 240},
                         "heldout_prefilter": {"raw": held(0.5), "clean": held(0.1)}},
        },
    }


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "metrics").mkdir()
    for stage, m in {"ingest": {"in": 1520, "kept": 1512, "rejected": 8, "by_reason": {"invalid_utf8": 2}},
                     "filter": {"in": 1512, "kept": 1300, "rejected": 212, "by_reason": {"gopher_repetition": 150,
                                                                                          "toxic": 62}},
                     "dedup": {"in": 1300, "kept": 1210, "rejected": 90, "by_reason": {"near_dup": 90}}}.items():
        (tmp_path / "metrics" / f"{stage}.json").write_text(json.dumps({**m, "seconds": 1.0}))
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(evaluate_json()))
    live = tmp_path / "dvclive" / "pretrain" / "plots" / "metrics" / "train"
    live.mkdir(parents=True)
    (live / "loss.tsv").write_text("timestamp\tstep\tloss\n" + "".join(
        f"0\t{s}\t{8 * math.exp(-s / 50) + 1:.4f}\n" for s in range(0, 300, 5)))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"model": "pretrain", "kind": "sample", "prompt": "The river", "completion": " flows <b>north</b>"},
        {"model": "pretrain", "kind": "qa", "prompt": "q1", "completion": "x"},
    ]))
    return tmp_path


def inputs(root: Path, mixture: dict | None = None) -> ReportInputs:
    return ReportInputs(root, root / "metrics", root / "metrics" / "evaluate.json", root / "reports" / "samples.jsonl",
                        mixture)


def images(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")
            for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def colour_columns(im: Image.Image, rgb: tuple[int, int, int], tol: int = 30) -> int:
    """Number of pixel columns holding at least one pixel near ``rgb``."""
    px = im.load()
    w, h = im.size
    return sum(any(all(abs(a - b) <= tol for a, b in zip(px[x, y], rgb, strict=True)) for y in range(0, h, 1))
               for x in range(0, w, 2))


def test_report_renders_plotted_images(run_dir: Path) -> None:
    out = run_dir / "reports" / "index.html"
    stats = build_report(inputs(run_dir, {"prose": 3, "code": 1}), ReportConfig(), out)
    html = out.read_text()
    imgs = images(html)
    assert stats["figures"] == len(imgs) >= 6 and stats["sections_missing"] == []
    for im in imgs:  # every figure has plotted marks in the first default colour, not a blank canvas
        assert colour_columns(im, C0) > 20, "figure without plotted data"
    loss = imgs[2]  # funnel, mixture, then the training curve
    assert loss.size[0] > 300 and colour_columns(loss, C0) > loss.size[0] // 4  # a line across the axes
    assert colour_columns(imgs[3], C1) > 20  # bits/byte bars of the second model
    assert "flows &lt;b&gt;north&lt;/b&gt;" in html  # generated text is escaped, not markup


def test_kept_steps_are_drawn_as_curves_per_domain(run_dir: Path) -> None:
    ev = evaluate_json()
    ev["models"]["pretrain"]["steps"] = {  # deliberately out of order: the plot sorts steps numerically
        str(s): {d: {"loss": 1.0, "bits_per_byte": b + 10 / s} for d, b in (("all", 1.4), ("code", 1.2))}
        for s in (100, 20, 300)}
    (run_dir / "metrics" / "evaluate.json").write_text(json.dumps(ev))
    out = run_dir / "index.html"
    stats = build_report(inputs(run_dir), ReportConfig(), out)
    html = out.read_text()
    assert "Held-out bits per byte over training (kept steps)" in html
    steps = images(html)[2]  # funnel, training curve (no mixture given), then the kept-steps curves
    assert colour_columns(steps, C0) > steps.size[0] // 4 and colour_columns(steps, C1) > steps.size[0] // 4
    assert re.findall(r"<td>pretrain</td><td>(\d+)</td>", html) == ["20", "100", "300"]
    assert stats["sections_missing"] == ["mixture"]


def test_prefilter_section_shows_raw_and_clean(run_dir: Path) -> None:
    out = run_dir / "index.html"
    build_report(inputs(run_dir), ReportConfig(), out)
    html = out.read_text()
    assert "Held-out bits per byte, sample drawn before filtering" in html
    rows = re.findall(r"<td>pretrain</td><td>(raw|clean)</td><td>prose</td>(?:<td>[^<]*</td>){3}<td>([\d.]+)</td>",
                      html)
    assert sorted(rows) == [("clean", "1.6"), ("raw", "2")]


def test_qa_table_side_by_side_in_evaluation_order(run_dir: Path) -> None:
    out = run_dir / "index.html"
    build_report(inputs(run_dir), ReportConfig(), out)
    html = out.read_text()
    header = re.search(r"<th>metric</th><th>(\w+)</th><th>(\w+)</th>", html)
    assert header and header.groups() == ("pretrain", "cpt")
    row = re.search(r"<td>MC accuracy</td><td>([\d.]+)</td><td>([\d.]+)</td>", html)
    assert row and row.groups() == ("0.25", "0.61")


def test_missing_inputs_are_stated_not_fatal(tmp_path: Path) -> None:
    out = tmp_path / "index.html"
    stats = build_report(inputs(tmp_path), ReportConfig(), out)
    html = out.read_text()
    assert set(stats["sections_missing"]) == {"funnel", "mixture", "training", "heldout", "heldout-prefilter", "qa",
                                              "posttrain", "forgetting", "toxicity", "samples"}
    assert html.count("Not available yet") == 10 and stats["figures"] == 0
    assert "kept steps" not in html  # no model kept steps: no section at all


def test_report_is_self_contained(run_dir: Path) -> None:
    out = run_dir / "index.html"
    build_report(inputs(run_dir, {"prose": 1.0}), ReportConfig(), out)
    html = out.read_text()
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)


def test_report_stage_cli(run_dir: Path) -> None:
    params = run_dir / "params.yaml"
    params.write_text("ingest:\n  sources: [{uri: x, domain: prose}]\nmixture:\n  weights: {prose: 1.0, code: 1.0}\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    cmd = stage_cmd("report", params, run_dir / "report.json", evaluate="metrics/evaluate.json",
                    samples="reports/samples.jsonl", metrics="metrics", out=run_dir / "r" / "index.html")
    r = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)  # DVCLive dirs: cwd
    assert r.returncode == 0, r.stderr
    m = json.loads((run_dir / "report.json").read_text())
    assert m["sections_missing"] == [] and m["figures"] >= 6


# ------------------------------------------------------------------------------ real headless browser
@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (tests run as root, as in CI)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env,
                       capture_output=True, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed and could not be installed (needs root + apt-get + the Debian mirror)")
    return exe


def screenshot(chromium: str, page: Path, out: Path, height: int = 3000) -> Image.Image:
    """Render ``page`` with networking disabled: a fresh network namespace where possible, else no proxy or DNS."""
    args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--virtual-time-budget=5000", f"--window-size=1200,{height}", f"--screenshot={out}",
            "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", page.resolve().as_uri()]
    isolated = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    cmd = ["unshare", "-n", *args] if isolated else args
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(out.parent)})
    assert out.exists(), f"no screenshot; chromium said:\n{r.stderr[-2000:]}"
    return Image.open(out).convert("RGB")


@pytest.mark.e2e
def test_report_draws_in_headless_browser_offline(run_dir: Path, chromium: str, tmp_path: Path) -> None:
    out = run_dir / "reports" / "index.html"
    build_report(inputs(run_dir, {"prose": 3, "code": 1}), ReportConfig(), out)
    shot = screenshot(chromium, out, tmp_path / "report.png", height=5000)
    assert colour_columns(shot, C0, tol=20) > 200  # plotted bars/lines reached the screen
    assert colour_columns(shot, C1, tol=20) > 50
    blank = run_dir / "blank.html"
    blank.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src="missing.png"', out.read_text()))
    assert colour_columns(screenshot(chromium, blank, tmp_path / "blank.png", height=5000), C0, tol=20) < 20


@pytest.mark.e2e
def test_dvc_plots_template_works_offline(chromium: str, tmp_path: Path) -> None:
    template = ROOT / "src" / "lmpipe" / "templates" / "dvc_plots.html"
    assert template.stat().st_size < 1_500_000 and "{plot_divs}" in template.read_text()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    (tmp_path / "bpb.json").write_text(json.dumps([{"series": f"m · d{i}", "bits_per_byte": 1 + i / 3} for i in range(5)]))
    for name, extra in (("offline", ["--html-template", str(template)]), ("cdn", [])):
        subprocess.run([*dvc, "plots", "show", "bpb.json", "-x", "bits_per_byte", "-y", "series", "-t",
                        "bar_horizontal", *extra, "-o", name], cwd=tmp_path, check=True, env=env, capture_output=True)
    page = tmp_path / "offline" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text()
    shot = screenshot(chromium, page, tmp_path / "plots.png", height=1200)
    assert colourful_columns(shot) > 100  # vega drew the bars without any network
    # control: DVC's default page loads vega from a CDN, so offline it draws nothing
    assert colourful_columns(screenshot(chromium, tmp_path / "cdn" / "index.html", tmp_path / "cdn.png", 1200)) == 0


def colourful_columns(im: Image.Image) -> int:
    """Pixel columns with a saturated (non-grey) pixel: plotted marks, not text or axes."""
    px = im.load()
    w, h = im.size
    return sum(any(max(px[x, y]) - min(px[x, y]) > 60 for y in range(h)) for x in range(0, w, 2))
