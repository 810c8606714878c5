"""Both demos in a real headless browser (Debian's chromium + chromedriver via Selenium): the page
loads, an upload is shown, a question gets an answer, bad uploads give messages in the page and the
app keeps serving. Screenshots are written to artifacts/ for a look."""

import json
import shutil
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from longllava.apps.medical import EXAMPLE_CT, build_medical_app
from longllava.apps.remote_sensing import EXAMPLE_SCENE, build_remote_sensing_app
from longllava.apps.sessions import SessionStore

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
UPLOAD_MB = 4
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1700", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="longllava-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for_text(driver, css: str, text: str, timeout: float = 60) -> str:
    WebDriverWait(driver, timeout).until(lambda d: any(text in e.text for e in d.find_elements(By.CSS_SELECTOR, css)))
    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def type_into(driver, css: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, css)
    field.clear()
    field.send_keys(text)


def assert_no_stack_trace(driver) -> None:
    page = driver.page_source
    assert "Traceback" not in page and 'File "/' not in page


def wait_until_sessions_closed(store: SessionStore, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(store) or any(store.root.iterdir())):
        time.sleep(0.2)
    assert len(store) == 0 and not any(store.root.iterdir())


def test_medical_demo_in_a_browser(browser, serve_demo, tmp_path, fixtures):
    with serve_demo(build_medical_app, "medical-browser", UPLOAD_MB) as served:
        browser.get(served.url)
        wait_for_text(browser, "#research-notice", "Research tool, not for diagnosis.")
        type_into(browser, "#ct-rule-value input", "3")
        type_into(browser, "#ct-tokens input[type=number]", "4")  # short answers: the tiny model is slow on CPU
        upload(browser, "ct-upload", EXAMPLE_CT)
        wait_for_text(browser, "#ct-info", "example_ct.nii.gz: 112 slices of 101 × 122 px")
        wait_for_text(browser, "#ct-selection", "3 of 112 slices go to the model")
        assert len(served.store) == 1 and any(served.store.root.glob("session-*/ct-*/example_ct.nii.gz"))
        type_into(browser, "#ct-question textarea", "Is there a lesion in this CT? Answer yes or no.")
        browser.find_element(By.ID, "ct-ask").click()
        wait_for_text(browser, "#ct-chat", "based on 3 slices: z index 0, 56, 111 (z 94.3 to 427.3 mm)")
        used = wait_for_text(browser, "#ct-used", "427.3")
        assert "56" in used and "262.3" in used
        browser.save_screenshot(str(ARTIFACTS / "medical_ct.png"))

        slip = tmp_path / "slip.zip"
        with zipfile.ZipFile(slip, "w") as zipped:
            zipped.writestr("../../evil.dcm", next((fixtures / "ct" / "example_ct_dicom").iterdir()).read_bytes())
        upload(browser, "ct-upload", slip)
        wait_for_text(browser, ".toast-body", "zip entry '../../evil.dcm' has an absolute or '..' path")
        broken = tmp_path / "broken.nii.gz"
        broken.write_bytes(EXAMPLE_CT.read_bytes()[:40_000])
        upload(browser, "ct-upload", broken)
        wait_for_text(browser, ".toast-body", "truncated or corrupt")
        huge = tmp_path / "huge.nii.gz"
        huge.write_bytes(b"\0" * (UPLOAD_MB * (1 << 20) + 1))
        upload(browser, "ct-upload", huge)
        wait_for_text(browser, ".toast-body", "exceed the maximum allowed size of 4.0 Mb")
        browser.save_screenshot(str(ARTIFACTS / "medical_errors.png"))
        assert_no_stack_trace(browser)

        # still serving: the conversation goes on over the CT loaded before
        type_into(browser, "#ct-question textarea", "Which slice shows the lesion?")
        browser.find_element(By.ID, "ct-ask").click()
        wait_for_text(browser, "#ct-chat", "sent with the first question")

        browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Pathology']").click()
        browser.find_element(By.XPATH, "//button[normalize-space()='Use the example image (IHC, colon)']").click()
        wait_for_text(browser, "#pathology-info", "global view + 2 × 2 sub-images of 336 px = 5 images")
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pathology-grid img"))
        browser.save_screenshot(str(ARTIFACTS / "medical_pathology.png"))

        browser.get("about:blank")  # closing the page ends the session: its folder goes
        wait_until_sessions_closed(served.store)


def test_remote_sensing_demo_in_a_browser(browser, serve_demo, tmp_path):
    with serve_demo(build_remote_sensing_app, "remote-sensing-browser", UPLOAD_MB) as served:
        browser.get(served.url)
        wait_for_text(browser, "#research-notice", "Research tool.")
        type_into(browser, "#scene-max-tiles input", "4")
        type_into(browser, "#scene-tokens input[type=number]", "4")
        upload(browser, "scene-upload", EXAMPLE_SCENE)
        wait_for_text(browser, "#scene-info", "Global view + 2 × 2 tiles of 336 px")
        link = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scene-geojson a[download]"))[0]
        assert link.get_attribute("download") == "RGB.byte_grid.geojson"
        with urllib.request.urlopen(link.get_attribute("href")) as response:  # the page's download link
            geojson = json.load(response)
        assert [f["id"] for f in geojson["features"]] == ["r0c0", "r0c1", "r1c0", "r1c1"]
        type_into(browser, "#scene-question textarea", "Is there a ship in this scene? Answer yes or no.")
        browser.find_element(By.ID, "scene-ask").click()
        wait_for_text(browser, "#scene-chat", "based on the global view + 2 × 2 tiles of 336 px")
        browser.save_screenshot(str(ARTIFACTS / "remote_sensing.png"))

        broken = tmp_path / "broken.tif"
        broken.write_bytes(EXAMPLE_SCENE.read_bytes()[:3000])
        upload(browser, "scene-upload", broken)
        wait_for_text(browser, ".toast-body", "broken.tif")
        browser.save_screenshot(str(ARTIFACTS / "remote_sensing_error.png"))
        assert_no_stack_trace(browser)

        browser.find_element(By.XPATH, "//button[normalize-space()='Use the example Landsat scene']").click()
        WebDriverWait(browser, 60).until(lambda d: "based on" not in d.find_element(By.ID, "scene-chat").text)
        type_into(browser, "#scene-question textarea", "How many ships are there? Answer with a number.")
        browser.find_element(By.ID, "scene-ask").click()
        wait_for_text(browser, "#scene-chat", "based on the global view + 2 × 2 tiles of 336 px")
        browser.get("about:blank")
        wait_until_sessions_closed(served.store)
