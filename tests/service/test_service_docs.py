"""/docs and /redoc work offline: every asset they load is served by the app itself, and headless
Chromium, with every host but 127.0.0.1 unresolvable, renders the operations from them."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from sleeptime.config import RunConfig
from sleeptime.service import ServiceSettings, create_app

OPERATIONS = {"/v1/answer", "/v1/contexts", "/v1/contexts/{context_id}/variants", "/healthz", "/readyz", "/metrics"}


def bare_settings(tmp_path):
    return ServiceSettings(config=RunConfig(output_dir=tmp_path / "out"), query_log=False)


class References(HTMLParser):
    """Every URL a page loads: src and href attributes, and ReDoc's spec-url."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


def referenced(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    # The scripts' own settings: Swagger UI's `url: '/openapi.json'`.
    return parser.urls + re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_elsewhere(tmp_path, page):
    with TestClient(create_app(bare_settings(tmp_path))) as client:
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html.text, re.I), "a URL of another host"
        urls = referenced(html.text)
        assert "/openapi.json" in urls and any(u.endswith(".js") for u in urls)
        for url in urls:
            assert url.startswith("/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url


def chromium_dom(url: str, profile) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is required (make test installs Debian's chromium package)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}",
             # Offline but for the service: any other host fails to resolve, as with no network.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             # Time for the page's scripts to fetch /openapi.json and draw it.
             "--virtual-time-budget=20000"]
    done = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return done.stdout


def test_swagger_ui_and_redoc_render_the_operations_offline_in_headless_chromium(tmp_path, helpers):
    with helpers.serving(bare_settings(tmp_path)) as (base, app):
        swagger = chromium_dom(f"{base}/docs", tmp_path / "profile-docs")
        redoc = chromium_dom(f"{base}/redoc", tmp_path / "profile-redoc")
        registry = app.state.parts.metrics.registry
        not_found = registry.get_sample_value("sleeptime_requests_total", {"path": "other", "status": "404"})
        operation_ids = {op["operationId"] for path in app.openapi()["paths"].values() for op in path.values()}
    # Swagger UI draws one block per operation, its path in data-path.
    assert set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', swagger)) == OPERATIONS, swagger[:2000]
    assert "Failed to load API definition" not in swagger
    # ReDoc draws a section per operation, with an anchor named by its operation id.
    assert set(re.findall(r'href="#tag/[^/"]+/operation/([^"]+)"', redoc)) == operation_ids, redoc[:2000]
    assert len(operation_ids) == len(OPERATIONS)
    assert not_found is None  # no asset the pages asked for was missing
