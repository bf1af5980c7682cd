"""The page at / in a real headless browser (Debian's chromium through its chromedriver): type a prompt, press
generate, and the streamed text appears, equal to the text `charlm.load(...).generate` gives for that seed.
Skipped, saying why, where chromium, its driver or selenium is missing."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

import charlm

pytest.importorskip("starlette", reason="the serve extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
import charlm.serve as serving  # noqa: E402

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 60


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver (.ci/run does)")
    return browser, driver


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> charlm.LanguageModel:
    root = tmp_path_factory.mktemp("page")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        charlm.train(
            root / "text.txt", out=root / "tiny", hidden_size=32, emb_size=16, num_layers=1, batch_size=4, bptt=32,
            max_steps=30, eval_interval=15, precision="fp32", device="cpu", baselines=False, sample_length=0, seed=1,
        )  # fmt: skip
    return charlm.load(root / "tiny", device="cpu")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    path, driver = _browser_paths()
    options = Options()
    options.binary_location = path
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(service=Service(driver), options=options)
    except Exception as exc:  # a browser that is installed but cannot start here
        pytest.skip(f"headless chromium did not start: {str(exc).splitlines()[0]}")
    chrome.set_page_load_timeout(20)
    yield chrome
    chrome.quit()


def _wait(browser, condition, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: condition(b))


def test_the_page_streams_a_completion_for_a_typed_prompt(lm, browser):
    from selenium.webdriver.common.by import By

    with serving.start({"tiny": lm}, api_key="page-key") as server:
        browser.get(server.url + "/")
        key_form = browser.find_element(By.ID, "key-form")
        _wait(browser, lambda b: key_form.is_displayed())  # the server wants its key: the page asks
        browser.find_element(By.ID, "key").send_keys("page-key")
        key_form.find_element(By.TAG_NAME, "button").click()
        _wait(browser, lambda b: "lstm" in b.find_element(By.ID, "figures").text)  # the model's figures
        assert "30 steps" in browser.find_element(By.ID, "figures").text
        browser.find_element(By.ID, "prompt").send_keys("the dog")
        for field, value in (("max_tokens", "120"), ("seed", "9"), ("temperature", "0.7")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        browser.find_element(By.ID, "generate").click()
        _wait(browser, lambda b: b.find_element(By.ID, "status").text.startswith("seed 9"))
        shown = browser.find_element(By.ID, "text").get_attribute("textContent")
    assert shown == lm.generate("the dog", max_new_tokens=120, temperature=0.7, seed=9).text
    assert browser.find_element(By.ID, "shown-prompt").text == "the dog"
