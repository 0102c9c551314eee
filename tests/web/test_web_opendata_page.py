"""/opendata for people: a browser gets a page listing the data with download links, any other client
the JSON catalogue as before (maintainer note: the transparency page's "Open data" link showed a
citizen raw JSON).

Over the real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.catalogue import OpenDataMeta
from gateway.web.pages import PUBLIC_PATHS, TRANSPARENCY_CSP

from .support import Fleet
from .test_web_opendata_publishing import app_client

# What Chromium and Firefox send for a page they navigate to.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


class _Page(HTMLParser):
    """The page's links (href, type, the text of the element they are in) and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.field_rows: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a":
            self.links.append(a)
        elif tag == "tr" and "data-field" in a:
            self.field_rows.append(a["data-field"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def _page(client: TestClient) -> tuple[_Page, str, dict[str, str]]:
    resp = await client.get("/opendata", headers={"Accept": BROWSER})
    assert resp.status == 200 and resp.content_type == "text/html" and resp.charset == "utf-8"
    text = await resp.text()
    parsed = _Page()
    parsed.feed(text)
    return parsed, text, dict(resp.headers)


async def test_a_browser_gets_a_page_listing_the_data_with_working_download_links(client: TestClient) -> None:
    index = await (await client.get("/opendata")).json()
    page, text, headers = await _page(client)
    assert f"<h1>{index['title']}</h1>" in text and "What each field means" in text
    # Styled by its inlined stylesheet, allowed by hash: no other path needed, no script allowed.
    assert headers["Content-Security-Policy"] == TRANSPARENCY_CSP and "<style>" in text and "<script" not in text
    # A row per field of the data dictionary.
    assert page.field_rows == [f"{f['kind']}.{f['field']}" for f in index["dataDictionary"]["fields"]]
    # A download link per format, relative (so it works under a proxy's path prefix), to the URL the
    # JSON catalogue names; each answers with the format's media type.
    downloads = {a["href"]: a["type"] for a in page.links if a.get("type")}
    page_url = f"http://127.0.0.1:{client.port}/opendata"
    assert {urljoin(page_url, h) for h in downloads} == set(index["formats"].values())
    for href, media in downloads.items():
        assert not href.startswith(("/", "http")), href
        resp = await client.get(urlsplit(urljoin(page_url, href))._replace(scheme="", netloc="").geturl())
        assert resp.status == 200 and resp.content_type == media, (href, resp.status)
    # Every link of the page is to a public path (or the licence's page elsewhere).
    for a in page.links:
        url = urlsplit(urljoin(page_url, a["href"]))
        assert a.get("rel") == "license" or url.path in PUBLIC_PATHS or url.path.startswith("/opendata/"), a
    assert any(a["href"] == "transparency" for a in page.links)
    assert any(a["href"] == "opendata/catalog.jsonld" for a in page.links)


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/*",
                                    "text/html;q=0.5, application/json", "application/json, text/html"])
async def test_machine_clients_get_the_same_json_as_before(client: TestClient, accept: str | None) -> None:
    plain = await client.get("/opendata", headers={"Accept-Encoding": "identity"})
    resp = await client.get("/opendata", headers={"Accept-Encoding": "identity", **({"Accept": accept} if accept else {})})
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.read() == await plain.read() and resp.headers["ETag"] == plain.headers["ETag"]
    assert "Content-Security-Policy" not in resp.headers or resp.headers["Content-Security-Policy"] \
        != TRANSPARENCY_CSP
    assert json.loads(await resp.read())["formats"]


async def test_the_page_is_a_representation_of_its_own_for_caches(client: TestClient) -> None:
    page = await client.get("/opendata", headers={"Accept": "text/html"})
    data = await client.get("/opendata", headers={"Accept": "application/json"})
    assert page.status == data.status == 200
    assert page.headers["ETag"] != data.headers["ETag"] and page.headers["Vary"] == "Accept, Accept-Encoding"
    again = await client.get("/opendata", headers={"Accept": "text/html", "If-None-Match": page.headers["ETag"]})
    assert again.status == 304
    # Review: the 304 had the app's default CSP (style-src 'self'), which a browser takes over the stored
    # one, so the revalidated page lost its inline styles.
    assert again.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"] == TRANSPARENCY_CSP
    crossed = await client.get("/opendata", headers={"Accept": "text/html", "If-None-Match": data.headers["ETag"]})
    assert crossed.status == 200 and crossed.content_type == "text/html"
    # Large enough to be gzipped like the JSON, with its own gzip ETag.
    packed = await client.get("/opendata", headers={"Accept": "text/html", "Accept-Encoding": "gzip"},
                              auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["ETag"].endswith('-gzip"')


async def test_text_in_the_page_is_escaped(fleet: Fleet) -> None:
    """The page prints the configuration's text (and the policy's): none of it can add markup."""
    meta = OpenDataMeta(title="Sensors <script>alert(1)</script>", description='Data & "more" <b>bold</b>',
                        publisher="City <i>Office</i>", licence="CC-BY-4.0", contact="https://city.example/?a=1&b=\"2\"")
    async with app_client(fleet, open_data=meta) as client:
        page, text, _ = await _page(client)
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    assert "<h1>Sensors &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in text
    assert "Data &amp; &quot;more&quot; &lt;b&gt;bold&lt;/b&gt;" in text and "City &lt;i&gt;Office&lt;/i&gt;" in text
    assert any(a["href"] == 'https://city.example/?a=1&b="2"' for a in page.links)  # one attribute, whole
    assert any(a.get("rel") == "license" and a["href"] == "https://spdx.org/licenses/CC-BY-4.0.html"
               for a in page.links)


async def test_the_page_ignores_a_query_and_the_json_refuses_it(client: TestClient) -> None:
    """Review: a shared link's ?utm_source=... got a browser a JSON 400; /transparency ignores it."""
    shared = await client.get("/opendata?utm_source=newsletter", headers={"Accept": BROWSER})
    assert shared.status == 200 and shared.content_type == "text/html"
    program = await client.get("/opendata?utm_source=newsletter", headers={"Accept": "application/json"})
    assert program.status == 400 and (await program.json())["error"]["param"] == "utm_source"


@pytest.mark.parametrize(("accept_encoding", "gzipped"), [
    ("gzip;q=0, x-gzip", True), ("x-gzip;q=0, gzip", True), ("gzip;q=0, x-gzip;q=0, *", False),
    ("*;q=0", False), ("*", True), ("br", False)])
async def test_gzip_and_its_alias_are_one_coding(client: TestClient, accept_encoding: str, gzipped: bool) -> None:
    resp = await client.get("/opendata", headers={"Accept-Encoding": accept_encoding}, auto_decompress=False)
    assert resp.status == 200 and (resp.headers.get("Content-Encoding") == "gzip") is gzipped
