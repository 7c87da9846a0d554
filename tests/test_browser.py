"""The chat page in real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): two streamed answers, a reload that shows the history, a second conversation with a
memory of its own, switching, renaming, deleting, forgetting everything."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed: the browser test is skipped "
                    "(./scripts/test installs them with apt-get when it can)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_chat_page_streams_answers_and_keeps_history(browser, start_dev_server, upstash_fakeredis,
                                                     model, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    dev = start_dev_server(UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                           UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                           ANTHROPIC_BASE_URL=model[1].url, KEY_PREFIX="browser")
    wait = WebDriverWait(browser, 60)

    def bubbles() -> list[tuple[str, str]]:
        """(role, text) of each message shown, read in one step (the list may be re-rendered)."""
        return [tuple(pair) for pair in browser.execute_script(
            "return [...document.querySelectorAll('#messages .message')]"
            ".map(e => [e.classList[1], e.innerText])")]

    def say(text: str, count: int) -> None:
        browser.find_element(By.ID, "prompt").send_keys(text, Keys.ENTER)
        wait.until(lambda _: len(bubbles()) == count and bubbles()[-1][1]
                   and browser.find_element(By.ID, "status").text == "ready")

    def chat_list() -> list[tuple[str, bool]]:
        return [tuple(pair) for pair in browser.execute_script(
            "return [...document.querySelectorAll('#chat-list button')]"
            ".map(e => [e.innerText, e.getAttribute('aria-current') === 'true'])")]

    def click(element_id: str) -> None:
        browser.find_element(By.ID, element_id).click()

    browser.get(dev.url)
    browser.find_element(By.ID, "user").send_keys("web-user", Keys.TAB)
    say("My favourite colour is green.", 2)
    say("What is my favourite colour?", 4)
    shown = bubbles()
    assert [role for role, _ in shown] == ["user", "assistant", "user", "assistant"]
    assert "Earlier you said: 1. 'My favourite colour is green.'" in shown[3][1]
    assert chat_list() == [("My favourite colour is green.", True)]
    browser.save_screenshot(str(tmp_path / "chat.png"))

    browser.refresh()  # the page keeps the user id and the conversation; the server has it
    wait.until(lambda _: len(bubbles()) == 4)
    assert bubbles() == shown

    click("new-chat")  # a second conversation remembers only its own
    wait.until(lambda _: bubbles() == [])
    say("Hello again.", 2)
    assert "This is the first thing you said." in bubbles()[1][1]
    wait.until(lambda _: len(chat_list()) == 2)
    assert chat_list() == [("Hello again.", True), ("My favourite colour is green.", False)]

    browser.find_element(By.CSS_SELECTOR, "#chat-list li:nth-child(2) button").click()
    wait.until(lambda _: bubbles() == shown)  # switched back: its history
    click("rename")
    browser.switch_to.alert.send_keys("Colours")
    browser.switch_to.alert.accept()
    wait.until(lambda _: ("Colours", True) in chat_list())
    assert browser.find_element(By.ID, "chat-title").text == "Colours"

    click("delete")
    browser.switch_to.alert.accept()
    wait.until(lambda _: chat_list() == [("Hello again.", True)] and len(bubbles()) == 2)

    click("reset")  # forget everything
    browser.switch_to.alert.accept()
    wait.until(lambda _: bubbles() == [] and chat_list() == [] and "new conversation" in
               browser.find_element(By.ID, "status").text)
    browser.refresh()
    wait.until(lambda _: browser.find_element(By.ID, "status").text == "ready")
    assert bubbles() == [] and chat_list() == []


def test_the_stop_button_reaches_the_agent(browser, start_dev_server, upstash_fakeredis):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from lib.devtools.model_server import OfflineModel
    from lib.devtools.serving import serve_in_background

    slow = serve_in_background(OfflineModel(delay=0.1))  # a word every 100 ms
    try:
        dev = start_dev_server(UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                               UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                               ANTHROPIC_BASE_URL=slow.url, KEY_PREFIX="browser-stop")
        wait = WebDriverWait(browser, 60)
        browser.get(dev.url)
        browser.find_element(By.ID, "user").send_keys("stopper", Keys.TAB)
        browser.find_element(By.ID, "prompt").send_keys("Tell me a long story.", Keys.ENTER)
        stop = browser.find_element(By.ID, "stop")
        wait.until(lambda _: stop.is_displayed() and browser.execute_script(
            "return document.querySelector('#messages .assistant')?.innerText.length > 0"))
        stop.click()
        wait.until(lambda _: "stopped" in browser.find_element(By.ID, "status").text
                   and not stop.is_displayed())
        shown = browser.execute_script(
            "return document.querySelector('#messages .assistant').innerText")
        assert shown and "(1 user messages so far.)" not in shown  # cut short
        browser.find_element(By.ID, "prompt").send_keys("Go on.", Keys.ENTER)
        wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#messages .message")) == 4
                   and browser.find_element(By.ID, "status").text == "ready")
    finally:
        slow.stop()


def test_a_page_on_another_origin_calls_the_api_only_when_listed(browser, start_dev_server,
                                                                  upstash_fakeredis, model):
    from lib.devtools.serving import serve_in_background

    def page(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<!doctype html><title>another app</title>"]

    other = serve_in_background(page)  # a second origin: another port
    try:
        call = """
            const done = arguments[arguments.length - 1];
            fetch(arguments[0] + "/api/chat", {method: "POST", body: JSON.stringify({prompt: "hi"}),
                  headers: {"Content-Type": "application/json", "X-User-Id": "cors-user"}})
              .then(async (r) => { const body = await r.json();
                                   done([r.status, r.headers.get("x-request-id") !== null,
                                         body.turn || body.error]); })
              .catch((e) => done(["blocked", String(e)]));
        """
        browser.set_script_timeout(60)
        for listed in (True, False):
            dev = start_dev_server(
                UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                ANTHROPIC_BASE_URL=model[1].url, KEY_PREFIX=f"cors{listed}",
                CORS_ORIGINS=other.url if listed else "https://elsewhere.example")
            browser.get(other.url)
            result = browser.execute_async_script(call, dev.url)
            if listed:
                assert result == [200, True, 1], result  # and an exposed header is readable
            else:
                assert result[0] == "blocked", result
    finally:
        other.stop()


def test_the_page_shows_tool_calls_and_thinking_compactly(browser, start_dev_server,
                                                          upstash_fakeredis, model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    dev = start_dev_server(UPSTASH_REDIS_REST_URL=upstash_fakeredis.url,
                           UPSTASH_REDIS_REST_TOKEN=upstash_fakeredis.token,
                           ANTHROPIC_BASE_URL=model[1].url, KEY_PREFIX="browser-tools",
                           AGENT_PERMISSION_MODE="acceptEdits")
    wait = WebDriverWait(browser, 60)
    browser.get(dev.url)
    browser.find_element(By.ID, "user").send_keys("tool-user", Keys.TAB)

    def ask(prompt: str) -> dict:
        browser.find_element(By.ID, "prompt").send_keys(prompt, Keys.ENTER)
        wait.until(lambda _: browser.find_element(By.ID, "status").text == "ready"
                   and browser.find_elements(By.CSS_SELECTOR, "#messages .assistant"))
        return browser.execute_script("""
            const answer = [...document.querySelectorAll('#messages .assistant')].at(-1);
            const folds = [...answer.querySelectorAll('details')].map((d) => ({
              kind: d.className, open: d.open, line: d.querySelector('summary').innerText,
              body: d.querySelector('pre').textContent}));
            return {folds, text: answer.innerText};""")

    shown = ask("Please write hello page to page.txt")
    tools = shown["folds"]
    assert [(t["kind"], t["open"]) for t in tools] == [("tool done", False)] * 2  # one line each
    assert tools[0]["line"].startswith('Write {"file_path":"') and "✓ File created" in tools[0][
        "line"]
    assert tools[1]["line"].startswith('Read {"file_path":"') and tools[1]["line"].endswith(
        "✓ 1 hello page")
    assert '"content": "hello page"' in tools[0]["body"]  # opened: the whole input and output
    assert tools[1]["body"].endswith("→ 1\thello page")
    assert shown["text"].endswith("I wrote page.txt and read back: 1\thello page")

    shown = ask("Think about pears.")
    thought = shown["folds"][0]
    assert thought["kind"] == "reasoning" and thought["line"].startswith("thinking: The user")
    assert thought["body"].startswith("The user asked me to think about 'Think about pears.'")
    assert "You said: 'Think about pears.'" in shown["text"]
