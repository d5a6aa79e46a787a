"""`lmforge report`: a run, a run without samples or evals, an LM sweep (with its fit) and an
ability sweep, each as report.html + report.md; the HTML opened in headless Chromium with no
console errors and every image loaded (screenshots beside the reports).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from _train_support import make_data_dir, train_config
from lmforge_testing import require

from lmforge.config import validate_config
from lmforge.eval.config import EvalConfig
from lmforge.eval.run import evaluate
from lmforge.lab.report import write_report
from lmforge.lab.report_config import ReportConfig
from lmforge.lab.sweep import run_sweep
from lmforge.lab.sweep_config import SweepConfig
from lmforge.train import run as train_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four kinds of report, written once for the module."""
    root = tmp_path_factory.mktemp("reports")
    data = make_data_dir(root)
    full, bare = root / "full", root / "bare"
    assert train_run(train_config(data, full, sample__every=6)) == 0
    evaluate(EvalConfig(runs=[str(full)], threads=1))  # writes full/eval/intrinsic.json
    assert train_run(train_config(data, bare, sample__every=0)) == 0
    sweep = _synthetic_sweep(root / "sweep")
    ability = root / "ability"
    run_sweep(validate_config(SweepConfig, {
        "out": str(ability), "workers": 1,
        "grid": {"sizes": [[1, 16, 2], [2, 32, 2]], "tokens": [3000]},
        "ability": {"task": "induction", "model": {"mlp": "none"}, "batch_size": 16,
                    "eval_every": 2, "eval_examples": 32,
                    "params": {"vocab": 16, "seq_len": 32, "min_repeat": 3, "max_repeat": 6,
                               "max_gap": 4, "train_examples": 64, "test_examples": 32}},
    }))  # fmt: skip
    out = {}
    for name, path in (("full", full), ("bare", bare), ("sweep", sweep), ("ability", ability)):
        write_report(ReportConfig(dir=str(path), bootstrap=20, starts=20, prompt=None))
        out[name] = path
    return out


def _synthetic_sweep(out: Path) -> Path:
    """A sweep.json of 3 budgets x 4 sizes whose losses follow a known L(N, D) exactly."""
    points = []
    for c in (1e12, 1e13, 1e14):
        for n in (2e5, 6e5, 2e6, 6e6):
            d = c / (6 * n)
            loss = 1.5 + 400 / n**0.34 + 1500 / d**0.36
            points.append({"name": f"n{n:g}_c{c:g}", "run_dir": f"runs/n{n:g}", "status": "done",
                           "n_layers": int(math.log10(n)), "d_model": int(n / 1e3), "N": n,
                           "N_non_embedding": n * 0.9, "N_non_embedding_with_head": n,
                           "D": d, "C": c, "loss": loss, "seconds": 1.0})  # fmt: skip
    out.mkdir(parents=True)
    index = {"format_version": 1, "kind": "lm", "task": None, "base": "tiny", "executor": "local",
             "threads": 1, "status": {"done": len(points)}, "points": points}  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(index))
    return out


def _html(path: Path) -> str:
    return (path / "report.html").read_text(encoding="utf-8")


def test_run_report_has_every_section(reports: dict[str, Path]) -> None:
    html, md = _html(reports["full"]), (reports["full"] / "report.md").read_text()
    for title in ("Summary", "Loss and learning rate", "Throughput", "Samples", "Evaluations",
                  "Inside the model", "Config", "Machine"):  # fmt: skip
        assert f">{title}</h2>" in html and f"## {title}" in md
    assert "eval/intrinsic.json" in html and "=== step" not in html and "step 6" in html
    assert "Logit lens" in html and "layer 1 head 1" not in html  # titles live in the image
    # Self-contained: every image inline, nothing fetched (no src/href to the network or files).
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    for ref in re.findall(r"\]\((report_files/[^)]+)\)", md):
        assert (reports["full"] / ref).is_file()


def test_run_without_samples_or_evals_says_so(reports: dict[str, Path]) -> None:
    html = _html(reports["bare"])
    assert "This run wrote no samples" in html and "No evaluations yet" in html


def test_sweep_report_fits_and_shows_the_laws(reports: dict[str, Path]) -> None:
    html = _html(reports["sweep"])
    assert "Loss vs compute" in html and "fitted compute-optimal frontier" in html
    fit = json.loads((reports["sweep"] / "fit.json").read_text())  # the fit code ran
    assert fit["alpha"] == pytest.approx(0.34, abs=0.02) and fit["beta"] == pytest.approx(
        0.36, abs=0.02
    )
    assert "Approach 2 (IsoFLOP)" in html and "a (N_opt)" in html


def test_ability_report(reports: dict[str, Path]) -> None:
    html = _html(reports["ability"])
    for text in ("Abilities", "p^L", "Schaeffer", "Final test metrics", "Induction",
                 "prefix-matching"):  # fmt: skip
        assert text in html
    assert "exact match" in html


@pytest.fixture(scope="module")
def browser():
    require(importlib.util.find_spec("selenium") is not None, "selenium is not installed")
    require(CHROMIUM is not None and CHROMEDRIVER is not None, "chromium/chromedriver not found")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.parametrize("kind", ["full", "bare", "sweep", "ability"])
def test_report_opens_in_chromium(browser, reports: dict[str, Path], kind: str, tmp_path: Path):
    browser.get((reports[kind] / "report.html").resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
    )
    assert images, "the report has no images"
    assert all(done and width > 0 for done, width, _ in images), images
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    assert browser.find_element("tag name", "h1").text.split()[0] in ("Run", "Sweep")
    browser.set_window_size(1200, 2400)
    assert browser.save_screenshot(str(tmp_path / f"report_{kind}.png"))
    assert (tmp_path / f"report_{kind}.png").stat().st_size > 10_000
