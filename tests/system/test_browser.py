# SPDX-License-Identifier: Apache-2.0
"""The burner page and the discovery page in a real browser (Debian's headless Chromium).

Screenshots go to tests/output/ (git-ignored): the burner page mid-burn and after
completion, at 1280x800 and at a phone's width.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.parse

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from clarens.dev import devpki
from tests.helpers import ROOT, CuttingProxy, basic_header, make_iso, put, read_from

OUTPUT = os.path.join(ROOT, "tests", "output")
DESKTOP, PHONE = (1280, 800), (390, 844)


def start_browser():
    """A headless Chromium with a fresh profile (no cookies, no remembered credentials)."""
    profile = tempfile.mkdtemp(prefix="clarens-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--user-data-dir=" + profile, "--window-size=%d,%d" % DESKTOP):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(*DESKTOP)
    driver.profile_dir = profile
    return driver


def stop_browser(driver):
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """One browser for the signed-in tests."""
    os.makedirs(OUTPUT, exist_ok=True)
    driver = start_browser()
    yield driver
    stop_browser(driver)


@pytest.fixture
def fresh_browser():
    """A browser nobody has signed in with."""
    driver = start_browser()
    yield driver
    stop_browser(driver)


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    return make_iso(str(tmp_path_factory.mktemp("browser-isos")), "browser", 8)   # ~6 s at 1x, polled each second


def wait(driver, condition, timeout=30, message=""):
    # (an element found as the browser moves to the next page may be gone when read: look again)
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
                         ).until(lambda d: condition(d), message)


def sign_in(driver, server, user="demo", base=None):
    """Sign in the way a person would: the sign-in form (on ``base``, the server's URL unless it is
    reached through a proxy), which sets the session cookie; a browser signed in already goes
    straight on to the burner page."""
    password = devpki.credentials(server.state_dir)[user]
    base = (base or server.url).rstrip("/")
    driver.get(base + "/login?to=burner")
    if driver.find_elements(By.ID, "signin-form"):
        fill_sign_in(driver, user, password)
    wait(driver, lambda d: d.current_url.endswith("/clarens/burner"), message="redirect to the burner page")
    wait(driver, lambda d: d.find_element(By.ID, "whoami").text.startswith("Signed in as " + user),
         message="signed-in identity shown")


def fill_sign_in(driver, user, password):
    for field, value in (("user", user), ("password", password)):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()


def messages(driver):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages .notice")]


def shot(driver, name, size=DESKTOP, whole=None):
    """Save a screenshot at exactly ``size``; ``whole``: the whole page as it scrolls (default on a phone)."""
    width, height = size
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == PHONE}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(0.2)
    if whole if whole is not None else size == PHONE:
        metrics["height"] = max(height, driver.execute_script("return document.documentElement.scrollHeight"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.2)
    driver.save_screenshot(os.path.join(OUTPUT, name))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_sign_in_upload_burn_watch_verify_eject(browser, server, iso):
    d = browser
    sign_in(d, server)
    assert "users" in d.find_element(By.ID, "whoami").text
    assert d.find_element(By.ID, "signin").get_attribute("hidden") is not None

    # Upload through the page's form, with its progress bar.
    d.find_element(By.ID, "upload-file").send_keys(iso)
    d.find_element(By.ID, "upload-button").click()
    wait(d, lambda d: "browser.iso" in d.find_element(By.ID, "images").text, message="uploaded image listed")
    assert any(m.startswith("Uploaded browser.iso") for m in messages(d))
    with open(iso, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest in d.find_element(By.ID, "images").text

    # Burn slowly enough to watch.
    Select(d.find_element(By.ID, "burn-image")).select_by_visible_text("browser.iso")
    Select(d.find_element(By.ID, "burn-drive")).select_by_visible_text("sim0")
    Select(d.find_element(By.ID, "burn-speed")).select_by_visible_text("1")
    d.find_element(By.ID, "burn-button").click()
    job = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs li.job[data-state=burning]"),
               message="job burning")[0]
    job_id = job.get_attribute("data-job")
    seen = set()

    def progress(d):
        # One atomic read: the page may rebuild the item between two WebDriver calls.
        state, value = d.execute_script(
            "const li = document.querySelector(`#jobs li.job[data-job='${arguments[0]}']`);"
            "return [li.dataset.state, li.querySelector('progress').value];", job_id)
        seen.add((state, str(value)))
        return state not in ("queued", "burning", "verifying")

    deadline = time.monotonic() + 60
    mid_burn_shot = False
    while not progress(d):
        burning = {float(v) for s, v in seen if s == "burning" and 0 < float(v) < 100}
        if burning and not mid_burn_shot:
            shot(d, "burner-mid-burn-1280x800.png")
            shot(d, "burner-mid-burn-phone.png", PHONE)
            mid_burn_shot = True
        assert time.monotonic() < deadline, "the burn did not finish"
        time.sleep(0.1)
    values = sorted({float(v) for s, v in seen if s == "burning"})
    assert len(values) >= 2, seen                                   # the bar moved through several values
    item = d.find_element(By.CSS_SELECTOR, "#jobs li.job[data-job='%s']" % job_id)
    assert item.get_attribute("data-state") == "done"
    assert item.find_element(By.CSS_SELECTOR, "[data-role=image-sha]").text == digest
    assert item.find_element(By.CSS_SELECTOR, "[data-role=disc-sha]").text == digest
    assert "matches" in item.find_element(By.CSS_SELECTOR, "[data-role=verdict]").text
    assert item.find_element(By.TAG_NAME, "progress").get_attribute("value") == "100"
    shot(d, "burner-done-1280x800.png")
    shot(d, "burner-done-phone.png", PHONE)

    # Eject.
    d.execute_script("[...document.querySelectorAll('#drives button')]"       # one atomic find-and-click
                     ".find((b) => b.textContent.trim() === 'Eject').click()")
    wait(d, lambda d: any("Ejected the disc in sim0" in m for m in messages(d)), message="eject confirmed")


def test_a_session_cookie_signs_in_polls_and_signs_out(fresh_browser, server, admin):
    d = fresh_browser
    d.get(server.url.rstrip("/") + "/burner")
    wait(d, lambda d: "Not signed in" in d.find_element(By.ID, "whoami").text, message="anonymous identity shown")
    d.find_element(By.LINK_TEXT, "Sign in").click()
    fill_sign_in(d, "demo", "not the password")                   # refused: the form again, no browser dialog
    wait(d, lambda d: "Wrong user name or password." in d.find_element(By.TAG_NAME, "main").text,
         message="refusal shown on the form")
    shot(d, "signin-refused-1280x800.png")
    fill_sign_in(d, "demo", devpki.credentials(server.state_dir)["demo"])
    wait(d, lambda d: d.find_element(By.ID, "whoami").text.startswith("Signed in as demo"), message="signed in")
    assert d.current_url.endswith("/clarens/burner")
    [cookie] = d.get_cookies()
    assert cookie["name"] == "clarens_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # over plain HTTP; HTTPS: tests/integration/test_sessions.py
    assert cookie["path"] == "/clarens" and not cookie["secure"]
    assert "clarens_session" not in d.execute_script("return document.cookie")     # scripts cannot read it

    # Polling carries the cookie: Apache logs the calls as demo's, and no password goes with them.
    mark = os.path.getsize(server.access_log)
    polls = lambda _=None: read_from(server.access_log, mark).count(b' demo [')   # noqa: E731
    wait(d, lambda d: polls() >= 3, message="three polls as demo")
    token = cookie["value"]
    assert whoami(server, token)[0] == 200

    # Signing out: the page shows the visitor as anonymous, the cookie is gone, and its token is refused.
    d.find_element(By.ID, "signout").click()
    wait(d, lambda d: "Not signed in" in d.find_element(By.ID, "whoami").text, message="signed out")
    assert d.get_cookies() == [] and whoami(server, token)[0] == 401

    # A session revoked elsewhere: the polling page notices, and offers to sign in again.
    sign_in(d, server)
    [cookie] = d.get_cookies()
    status, me = whoami(server, cookie["value"])
    assert admin.session.revoke(me["result"]["session"]) is True
    wait(d, lambda d: "Not signed in" in d.find_element(By.ID, "whoami").text, message="revocation noticed")
    assert any("sign in again" in m for m in messages(d)) and d.get_cookies() == []


def whoami(server, token):
    """(HTTP status, JSON-RPC answer) of system.whoami with a session token."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/clarens/", '{"jsonrpc": "2.0", "method": "system.whoami", "id": 1}',
                     {"Content-Type": "application/json", "Authorization": "Bearer " + token})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_an_anonymous_visitor_is_offered_only_what_the_policy_allows(fresh_browser, server, iso):
    """The issue: two red "Access denied" banners, "No images yet" although there were images, and
    active Upload and Burn buttons.  Now: how to sign in, what each part would show after it, and no
    button the policy would refuse."""
    with open(iso, "rb") as f:
        status, body = put(server, "anonymous-sees-this-not.iso", f.read())
    assert status in (201, 409), body                          # an image exists (409: from an earlier test)
    d = fresh_browser
    d.get(server.url.rstrip("/") + "/burner")
    wait(d, lambda d: "Not signed in" in d.find_element(By.ID, "whoami").text, message="anonymous identity shown")
    assert d.find_element(By.ID, "signin").is_displayed()        # and how to sign in
    wait(d, lambda d: d.find_element(By.ID, "images").text == "Sign in to see the images.", message="images")
    assert d.find_element(By.ID, "jobs").text == "Sign in to see the jobs."
    assert d.find_element(By.ID, "drives").text == "Sign in to see the drives."
    for button in ("burn-button", "upload-button", "upload-file", "burn-image"):
        assert not d.find_element(By.ID, button).is_enabled(), button
    time.sleep(2.5)                                            # two polls would have come and gone
    assert d.find_elements(By.CSS_SELECTOR, "#messages .notice.error") == [], messages(d)
    shot(d, "burner-anonymous-1280x800.png")


def test_a_name_with_html_is_shown_as_text(browser, server, iso):
    name = "<img src=x onerror=document.title='pwned'> & <b>bold.iso"
    with open(iso, "rb") as f:
        status, body = put(server, urllib.parse.quote(name), f.read())
    assert status == 201, body
    d = browser
    sign_in(d, server)
    wait(d, lambda d: name in d.find_element(By.ID, "images").text, message="name shown literally")
    assert d.find_elements(By.CSS_SELECTOR, "#images img, #images b") == []
    assert d.title == "Clarens burner"
    options = [o.text for o in d.find_elements(By.CSS_SELECTOR, "#burn-image option")]
    assert name in options


def test_discovery_page_lists_methods_and_tries_echo(browser, server):
    d = browser
    d.get(server.url)
    text = d.find_element(By.TAG_NAME, "main").text
    for method in ("system.listMethods", "echo.echo", "burner.burn", "validator1.manyTypesTest"):
        assert method in text
    # a failed module: why only for administrators (errors name files), that it failed for everyone
    assert "initfail.hello" not in text and "initfail refuses to start" not in text
    assert "failed to load: an administrator sees why" in text
    # the form starts on a method this (anonymous) caller may call, with arguments that fit it
    assert Select(d.find_element(By.ID, "try-method")).first_selected_option.get_attribute("value") == "echo.echo"
    params = d.find_element(By.ID, "try-params")
    d.find_element(By.CSS_SELECTOR, "#try button[type=submit]").click()
    assert wait(d, lambda d: d.find_element(By.ID, "try-result").text, message="first result") == '"hello"'
    params.clear()
    params.send_keys('["hi from the browser"]')
    d.find_element(By.CSS_SELECTOR, "#try button[type=submit]").click()
    wait(d, lambda d: d.find_element(By.ID, "try-result").text == '"hi from the browser"', message="try-it result")
    Select(d.find_element(By.ID, "try-method")).select_by_value("acl.show")
    params.clear()
    params.send_keys("[]")
    d.find_element(By.CSS_SELECTOR, "#try button[type=submit]").click()
    wait(d, lambda d: d.find_element(By.ID, "try-result").text.startswith("Fault -32001"), message="fault shown")
    shot(d, "discovery-1280x800.png")
    shot(d, "discovery-phone.png", PHONE, whole=False)


def held(server, name):
    """How many bytes of the demo user's upload of ``name`` the server holds (0 if none)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("HEAD", "/clarens/images/" + name, headers=basic_header(server, "demo"))
    response = conn.getresponse()
    response.read()
    conn.close()
    return int(response.getheader("Upload-Offset") or 0)


def test_uploads_resume_after_a_cut_and_when_the_file_is_chosen_again(fresh_browser, server, tmp_path, new_hidden):
    """Through a LAN that drops connections: the page resumes by itself, and a page reloaded
    mid-upload continues where it stopped when the same file is chosen again."""
    d = fresh_browser
    lan = CuttingProxy(server.port, rate=8 * 10**6)
    try:
        base = "http://127.0.0.1:%d/clarens" % lan.port
        sign_in(d, server, base=base)

        # 1. The connection drops mid-upload: the page asks what the server has and sends the rest.
        first = make_iso(str(tmp_path), "cut", 30)
        lan.cut_after(10 * 10**6)
        d.find_element(By.ID, "upload-file").send_keys(first)
        d.find_element(By.ID, "upload-button").click()
        wait(d, lambda d: any(m.startswith("Uploaded cut.iso") for m in messages(d)), timeout=60,
             message="the cut upload completed")
        assert lan.cuts == 1 and any(m.startswith("Resuming the upload of cut.iso at") for m in messages(d))

        # 2. The page goes away mid-upload; choosing the same file again continues it.
        second = make_iso(str(tmp_path), "again", 30)
        size = os.path.getsize(second)
        d.find_element(By.ID, "upload-file").send_keys(second)
        d.find_element(By.ID, "upload-button").click()
        wait(d, lambda d: " left" in d.find_element(By.ID, "upload-status").text and "/s" in
             d.find_element(By.ID, "upload-status").text, message="rate and time left shown")
        wait(d, lambda d: held(server, "again.iso") > 8 * 10**6, timeout=30, message="part of it uploaded")
        d.refresh()                                                # the upload is abandoned
        wait(d, lambda d: d.find_element(By.ID, "whoami").text.startswith("Signed in"), message="page reloaded")
        before = lan.sent
        d.find_element(By.ID, "upload-file").send_keys(second)
        d.find_element(By.ID, "upload-button").click()
        wait(d, lambda d: any(m.startswith("Uploaded again.iso") for m in messages(d)), timeout=60,
             message="the resumed upload completed")
        assert any(m.startswith("Resuming the upload of again.iso at") for m in messages(d))
        assert lan.sent - before < size * 0.8                      # only the rest was sent
        # 3. A name already taken is refused once, not retried as if the connection had failed.
        mark = os.path.getsize(server.access_log)
        d.find_element(By.ID, "upload-file").send_keys(first)
        d.find_element(By.ID, "upload-button").click()
        wait(d, lambda d: any("cut.iso exists; delete it first" in m for m in messages(d)), message="refused")
        # (retries would have come before the message; Apache logs the one request just after it)
        puts = lambda _=None: read_from(server.access_log, mark).count(b"PUT /clarens/images/cut.iso ")  # noqa: E731
        wait(d, puts, message="the refused request logged")
        assert puts() == 1
    finally:
        lan.close()
    for path in (first, second):      # the list is fetched again after "Uploaded ..." is shown
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        wait(d, lambda d, digest=digest: digest in d.find_element(By.ID, "images").text, message="%s listed" % path)


# Counts the page's JSON-RPC requests in flight, before the page's own scripts run.
COUNT_IN_FLIGHT = """
window.__rpc = {now: 0, most: 0, total: 0};
const realFetch = window.fetch;
window.fetch = async (...args) => {
  const rpc = window.__rpc;
  rpc.now++; rpc.total++; rpc.most = Math.max(rpc.most, rpc.now);
  try { return await realFetch(...args); } finally { rpc.now--; }
};
"""


def test_a_hung_helper_never_has_two_polls_in_flight(fresh_browser, server):
    d = fresh_browser
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_IN_FLIGHT})
    sign_in(d, server)
    wait(d, lambda d: d.execute_script("return window.__rpc.total") >= 3, message="polling")
    helper = server.helper_pid()
    os.kill(helper, signal.SIGSTOP)
    try:
        d.execute_script("window.__rpc.most = window.__rpc.now; window.__rpc.total = 0")
        # each poll now waits about 2 s for the helper: several of them, never two at once
        wait(d, lambda d: d.execute_script("return window.__rpc.total") >= 3, timeout=30, message="polling on")
        rpc = d.execute_script("return window.__rpc")
        assert rpc["most"] == 1, rpc
        assert any(m.startswith("Burner unavailable") for m in messages(d))
    finally:
        os.kill(helper, signal.SIGCONT)
