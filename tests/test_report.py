"""The eval report: Markdown and HTML content, escaping, self-containment, and plots a real browser renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evals.report import write_reports

RULES = [("lowercase", "Write in lowercase."), ("no_commas", "No commas."), ("short", "At most 20 words."),
         ("tone", "Be kind (no check).")]
ARMS = ["base_prompted", "tuned_unprompted", "base_unprompted"]
INPUTS = ["what is 2 & 3?", "say hi", "list three colours"]
EVIL = "<script>alert(1)</script> & more"


def record(text: str, answer: str, failed: dict[str, str]) -> dict:
    return {"input": text, "answer": answer, "all_rules": not failed, "failed": failed}


def synthetic() -> tuple[dict, dict[str, list[dict]]]:
    """Three arms on three inputs: they agree on 'say hi' and disagree on the other two."""
    records = {
        "base_prompted": [record(INPUTS[0], "five", {}), record(INPUTS[1], "hi", {}),
                          record(INPUTS[2], "red and blue and green", {})],
        "tuned_unprompted": [record(INPUTS[0], EVIL, {"lowercase": "has 'S' & co"}), record(INPUTS[1], "hi", {}),
                             record(INPUTS[2], "red, blue", {"no_commas": "found 1 comma"})],
        "base_unprompted": [record(INPUTS[0], "Five", {"lowercase": "has uppercase"}),
                            record(INPUTS[1], "hi", {}), record(INPUTS[2], "red", {})],
    }
    metrics: dict = {}
    for i, arm in enumerate(ARMS):
        passed = sum(r["all_rules"] for r in records[arm])
        metrics[arm] = {
            "n": 3, "all_rules_adherence": passed / 3, "all_rules_ci95": [0.1 * i, 0.9],
            "per_rule": {"lowercase": 1 - 0.5 * i, "no_commas": 0.0 if i == 1 else 1.0, "short": 0.75},
            "prompt_tokens_per_request": [412.0, 31.0, 30.0][i], "generated_tokens_per_request": 12.0,
            "latency_s_per_request": [0.21, 0.05, 0.04][i], "throughput_requests_per_s": 10.0, "model": "m",
        }
    metrics["vs_base_prompted"] = {"tuned_unprompted": 0.5, "base_unprompted": 1.0}
    return metrics, records


@pytest.fixture
def report(tmp_path) -> tuple[Path, Path]:
    metrics, records = synthetic()
    return write_reports(metrics, records, RULES, tmp_path, "demo & eval")


def test_markdown_has_table_and_disagreements(report):
    md = report[0].read_text()
    assert md.startswith("# demo &amp; eval\n")
    assert "| metric | base_prompted | tuned_unprompted | base_unprompted |" in md
    assert "| all rules | 100.0% | 33.3% | 66.7% |" in md
    assert "| rule no_commas | 100.0% | 0.0% | 100.0% |" in md
    assert "| prompt tokens / request | 412 | 31 | 30 |" in md
    assert "| McNemar p vs base_prompted | - | 0.5 | 1 |" in md
    assert "rule tone" not in md  # unchecked rules have no rate
    assert "loose" not in md and "judge" not in md  # optional metrics appear only when present


def test_optional_metrics_are_rendered(tmp_path):
    metrics, records = synthetic()
    for arm in ARMS:
        metrics[arm].update(all_rules_adherence_loose=1.0, per_rule_loose={"lowercase": 0.9}, label_match=0.5)
    metrics["judge_vs_base_prompted"] = {"tuned_unprompted": {"win_rate": 0.25}}
    md = write_reports(metrics, records, RULES, tmp_path, "t")[0].read_text()
    assert "| all rules (loose) | 100.0% | 100.0% | 100.0% |" in md
    assert "| rule lowercase (loose) | 90.0% | 90.0% | 90.0% |" in md
    assert "| rule no_commas (loose) | - | - | - |" in md
    assert "| label match | 50.0% | 50.0% | 50.0% |" in md
    assert "| judge win rate vs base_prompted | - | 25.0% | - |" in md
    assert "## Inputs where the arms disagree on all rules (2)" in md
    assert f"| 1 | {INPUTS[0].replace('&', '&amp;')} | pass | fail: lowercase | fail: lowercase |" in md
    assert "| 2 | list three colours | pass | fail: no_commas | pass |" in md
    assert "say hi" not in md  # every arm passed it


def test_html_is_self_contained_and_escaped(report):
    page = report[1].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert not re.search(r"<script[^>]*\bsrc", page) and not re.search(r"<link\b", page)
    assert page.count("<script") == 1  # only the render check
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "has &#x27;S&#x27; &amp; co" in page  # failure reasons are escaped too
    assert "<title>demo &amp; eval</title>" in page
    for plot_id in ("plot-adherence", "plot-prompt-tokens", "plot-latency"):
        assert re.search(rf'<svg class="plot" id="{plot_id}"[^>]*><title id="{plot_id}-title">', page)
    # all rules + 3 checked rules, one bar per arm; then one bar per arm in each cost plot
    assert page.count('<rect class="bar"') == 3 * 4 + 3 + 3


def test_grouping_compares_first_sample_per_input(tmp_path):
    metrics, records = synthetic()
    # a second sample per input that would flip every verdict: it must be ignored
    records = {arm: rs + [record(r["input"], "x", {} if r["failed"] else {"short": "too long"}) for r in rs]
               for arm, rs in records.items()}
    md = write_reports(metrics, records, RULES, tmp_path, "t")[0].read_text()
    assert "disagree on all rules (2)" in md


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Chromium is not installed (apt-get install chromium); the report's browser test needs it"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--window-size=1280,2000"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def test_html_renders_in_headless_chromium(report, tmp_path):
    binary = chromium()
    url = report[1].resolve().as_uri()
    dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
    found = re.search(r'<pre id="render-check" hidden="">(.*?)</pre>', dom.stdout, re.S)
    assert found and found.group(1), f"no render check in the dumped DOM; stderr:\n{dom.stderr[-2000:]}"
    check = json.loads(found.group(1))
    assert [p["id"] for p in check["plots"]] == ["plot-adherence", "plot-prompt-tokens", "plot-latency"]
    assert all(p["width"] > 100 and p["height"] > 50 for p in check["plots"]), check
    assert check["bars_rendered"] == 3 * 4 + 3 + 3  # every bar laid out with a size, 0% ones included
    assert check["scripts"] == 1  # the answer's <script> stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout

    png = tmp_path / "report.png"
    shot = run_chromium(binary, tmp_path / "profile", f"--screenshot={png}", url)
    assert png.exists(), f"no screenshot; stderr:\n{shot.stderr[-2000:]}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
