"""Issue 31, item 4: the static site of a real smoke run (conftest's meanimg on the tiny
architecture) opened from a file URL in headless Chromium through selenium: it loads, the filter
hides rows, a header click sorts, a number's link leads to its cell's configuration, and the
browser logs no error. Set REINV_SITE_SCREENSHOT=PATH to keep a screenshot of the index."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import chromium, cli_invoke


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    wd = tmp_path_factory.mktemp("site-work")
    args = ["-p", "conftest", "run", "-a", "meanimg", "--arch", "tiny", "-d", "re[p=0.2]", "-d", "re[p=0.8]"]
    args += ["--budget", "smoke", "--metric", "natural_acc", "--metric", "attack_acc", "--quiet"]
    cli_invoke(*args, "--workdir", wd, plugins=("conftest",), ok=True)
    out = tmp_path_factory.mktemp("site") / "site"
    result = cli_invoke("site", "-o", out, "--workdir", wd, plugins=("conftest",), ok=True)
    assert "pages into" in result.output
    return out


def test_site_in_headless_chromium(site, tmp_path):
    webdriver, service, options = chromium()
    from selenium.webdriver.common.by import By

    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_window_size(1280, 1000)
        driver.get((site / "index.html").as_uri())
        assert driver.title == "reinv-bench leaderboards"
        table = driver.find_element(By.CSS_SELECTOR, "table.lb")
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 3  # none, re[p=0.2], re[p=0.8]
        assert driver.execute_script("return document.images[0].naturalWidth") > 100  # the plot drew
        if os.environ.get("REINV_SITE_SCREENSHOT"):
            driver.save_screenshot(os.environ["REINV_SITE_SCREENSHOT"])

        box = driver.find_element(By.CSS_SELECTOR, "input.filter")
        box.send_keys("p=0.8")
        visible = [r for r in rows if r.is_displayed()]
        assert len(visible) == 1 and "re[p=0.8]" in visible[0].text
        box.clear()
        box.send_keys(" ")  # an emptied filter shows every row again
        assert all(r.is_displayed() for r in table.find_elements(By.CSS_SELECTOR, "tbody tr"))

        headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        col = headers.index("Defense")
        header = table.find_elements(By.CSS_SELECTOR, "thead th")[col]

        def order():
            return [
                r.find_elements(By.TAG_NAME, "td")[col].text
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
            ]

        header.click()
        assert order() == sorted(order())
        header.click()
        assert order() == sorted(order(), reverse=True)

        link = table.find_element(By.CSS_SELECTOR, "tbody tr td a[href^='entries/']")
        link.click()
        assert "entries/" in driver.current_url
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Configuration" in body and "Environment" in body and "meanimg" in body
        driver.find_element(By.LINK_TEXT, "Defenses").click()
        driver.find_element(By.PARTIAL_LINK_TEXT, "re[p=0.8]").click()
        assert "Defense re[p=0.8]" in driver.find_element(By.TAG_NAME, "h1").text
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


def test_the_site_needs_no_server(site):
    assert shutil.which("python3")  # nothing to start: every page is a file
    text = (site / "index.html").read_text()
    assert "http://" not in text and "https://" not in text
