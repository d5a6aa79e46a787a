"""The playground page in a real headless browser (Debian's chromium, driven by Selenium): type a
prompt, send it, watch the streamed reply grow, stop it (the server frees the row), then a
completion-mode request that runs to its max tokens. The page loads nothing from the network.
"""

from __future__ import annotations

import importlib.util
import shutil
import time

import pytest
import torch
from _serve_support import Server, char_tokenizer
from lmforge_testing import require

from lmforge.models import LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An LSTM slow enough to stop mid-stream (a few ms a token) that never ends a text."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    cfg = LSTMConfig(n_layers=2, d_model=256, d_hidden=768)
    model = build_model(cfg, tokenizer.vocab_size).eval()
    with torch.no_grad():
        model.lm_head.bias[tokenizer.eot_id] = -1e4
    run = create_run_dir(tmp_path_factory.mktemp("page") / "lstm", model, cfg, tokenizer)
    server = Server(run, "model_name=m")
    yield server
    assert server.stop() == 0


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
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def set_field(driver, element_id: str, value: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(value)


def test_type_send_watch_the_stream_and_stop_it(browser, served):
    browser.get(served.url + "/")
    model = browser.find_element("id", "model")
    wait_for(lambda: model.text == "model: m", what="the model id")
    set_field(browser, "max_tokens", "20000")
    set_field(browser, "prompt", "hello there")
    browser.find_element("id", "send").click()

    def reply_length() -> int:
        spans = browser.find_elements("css selector", "#log .turn span")
        return len(spans[-1].text) if len(spans) >= 2 else 0

    first = wait_for(reply_length, what="streamed text")
    wait_for(lambda: reply_length() > first + 20, what="more streamed text")
    assert browser.find_element("id", "stop").is_enabled()
    assert served.health()["active_rows"] == 1
    browser.find_element("id", "stop").click()
    status = browser.find_element("id", "status")
    wait_for(lambda: status.text == "stopped", what="the stopped status")
    assert browser.find_element("id", "send").is_enabled()
    wait_for(lambda: served.health()["active_rows"] == 0, what="the row to be freed")
    stopped_at = reply_length()
    time.sleep(0.3)
    assert reply_length() == stopped_at  # nothing arrives after the stop


def test_completion_mode_runs_to_max_tokens(browser, served):
    browser.get(served.url + "/")
    model = browser.find_element("id", "model")
    wait_for(lambda: model.text == "model: m", what="the model id")
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "mode")).select_by_value("completion")
    set_field(browser, "max_tokens", "12")
    set_field(browser, "prompt", "the")
    browser.find_element("id", "send").click()
    status = browser.find_element("id", "status")
    wait_for(lambda: "finish: length" in status.text, what="the finished status")
    assert status.text.startswith("12 tokens")
    turn = browser.find_elements("css selector", "#log .turn")[-1]
    assert turn.text.splitlines()[-1].startswith("the")


def test_the_page_is_self_contained(served):
    import re

    import httpx2 as httpx

    page = httpx.get(served.url + "/").text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and 'fetch("http' not in page
