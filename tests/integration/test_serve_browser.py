"""The web page in headless Chromium: type a query, upload an image (picker, drop, paste), get results with
thumbnails, switch the modality filter, read the JSON view; the results equal the API's; a screenshot is saved.

Set OMNIRET_SCREENSHOT to a path to keep the screenshot (docs/serve-page.png was made that way).
"""

from __future__ import annotations

import base64
import json
import os
import shutil

import httpx
import pytest
from _cdp import Browser, find_chromium
from _serve import SAMPLE, open_shared, running
from PIL import Image

from omniret.serve import ServeConfig, create_app

CAT = SAMPLE / "photos" / "chelsea_the_cat.jpg"
HITS = "[...document.querySelectorAll('#results .hit')]"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    binary = find_chromium()
    if binary is None:
        pytest.fail("chromium not found: `make install` installs Debian's chromium package (apt-get, as root)")
    with running(create_app(open_shared(), ServeConfig())) as url:
        browser = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
        try:
            browser.navigate(url + "/")
            browser.wait_for("document.getElementById('model').textContent.includes('17 documents')")
            yield browser, url
        finally:
            browser.close()


def _api_ids(url: str, body: dict) -> list[str]:
    return [h["id"] for h in httpx.post(url + "/v1/search", json=body, timeout=60).json()["data"]]


def test_type_upload_search_and_screenshot(page, tmp_path):
    browser, url = page
    browser.type("#q", "a cat")
    browser.upload("#file", CAT)
    browser.wait_for("document.body.dataset.imageReady === '1'")
    assert browser.eval("document.getElementById('drop-hint').textContent") == CAT.name
    browser.click("#go")
    browser.wait_for("document.body.dataset.searches === '1'")
    ids = browser.eval(f"{HITS}.map(h => h.dataset.id)")
    image = "data:image/jpeg;base64," + base64.b64encode(CAT.read_bytes()).decode()
    query = {"content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "a cat"}]}
    assert ids == _api_ids(url, {"query": query, "k": 12})
    assert ids[0] == "photos/chelsea_the_cat.jpg" and len(ids) == 12
    # every document with an image shows its thumbnail, decoded by the browser
    browser.wait_for(f"{HITS}.every(h => !h.querySelector('img') || h.querySelector('img').naturalWidth > 0)")
    shown = browser.eval(f"{HITS}.filter(h => h.querySelector('img')).length")
    assert shown == sum(not i.startswith("texts/") for i in ids) > 0
    assert browser.eval(f"{HITS}[0].querySelector('.score').textContent") != ""
    view = json.loads(browser.eval("document.getElementById('json').textContent"))
    assert [h["id"] for h in view["data"]] == ids
    shot = browser.screenshot(tmp_path / "page.png")
    assert Image.open(shot).size[0] >= 1000
    if keep := os.environ.get("OMNIRET_SCREENSHOT"):
        shutil.copy(shot, keep)


def test_modality_filter_and_k(page):
    browser, url = page
    browser.eval("document.getElementById('clear-image').click()")
    browser.eval("(() => { const s = document.getElementById('modality'); s.value = 'text';"
                 " s.dispatchEvent(new Event('change')); document.getElementById('k').value = '3'; })()")
    before = int(browser.eval("document.body.dataset.searches"))
    browser.click("#go")
    browser.wait_for(f"document.body.dataset.searches === '{before + 1}'")
    mods = browser.eval(f"{HITS}.map(h => h.querySelector('.meta span').textContent)")
    assert len(mods) == 3 and all(m.endswith("· text") for m in mods)
    assert browser.eval(f"{HITS}.map(h => h.dataset.id)") == _api_ids(url, {"query": "a cat", "k": 3, "modality": "text"})


def _send_image_event(browser: Browser, kind: str, name: str) -> None:
    """A real File in a DataTransfer, delivered as a drop on the drop zone or a paste on the document."""
    js = f"""(async () => {{
      const blob = await (await fetch('/media/emoji%2F{name}')).blob();
      const dt = new DataTransfer();
      dt.items.add(new File([blob], '{name}', {{type: 'image/jpeg'}}));
      if ('{kind}' === 'drop') {{
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {{dataTransfer: dt, bubbles: true}}));
      }} else {{
        document.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: dt, bubbles: true}}));
      }}
    }})()"""
    browser.eval(js)


def test_drag_and_drop_and_paste_set_the_query_image(page):
    browser, _ = page
    for kind, name in (("drop", "dog.png"), ("paste", "rocket.png")):
        browser.eval("document.getElementById('clear-image').click()")
        _send_image_event(browser, kind, name)
        browser.wait_for("document.body.dataset.imageReady === '1'")
        assert browser.eval("document.getElementById('drop-hint').textContent") == name
        assert browser.eval("document.getElementById('preview').src").startswith("data:image/jpeg;base64,")
        browser.eval("(() => { document.getElementById('q').value = ''; "
                     "document.getElementById('modality').value = 'image'; })()")
        before = int(browser.eval("document.body.dataset.searches"))
        browser.click("#go")
        browser.wait_for(f"document.body.dataset.searches === '{before + 1}'")
        assert browser.eval(f"{HITS}[0].dataset.id") == f"emoji/{name}"


def test_page_reports_api_errors(page):
    browser, _ = page
    browser.eval("(() => { document.getElementById('clear-image').click(); "
                 "document.getElementById('q').value = 'x'; document.getElementById('k').value = '5000'; })()")
    browser.click("#go")
    msg = browser.wait_for("document.getElementById('status').className === 'error' && "
                           "document.getElementById('status').textContent")
    assert msg.startswith("k: must be <= 1000")
