"""The MCP App view of get_video_products, the icon and the titles, as hosts see them.

The view is exercised in a real headless Chromium driven by Playwright (Debian's; elsewhere one on PATH or
Playwright's own; without any, the browser tests skip with the reason, except in CI, where they fail): a small
host page on 127.0.0.1 loads the `ui://keyapi/products` HTML, as read through the SDK client from a demo server, into a
sandboxed iframe served with the CSP the resource declares, performs the host side of the MCP Apps
handshake, and delivers a real `get_video_products` result from that server. The assertions compare what
the view shows with the result's `structuredContent`.
"""

from __future__ import annotations

import base64
import re
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import NO_PRODUCTS, RESELLS, THREE_ROWS, TOOL, TWELVE_ROWS, ZERO_VIEWS, Clock, in_ci, parsed, text_of
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from keyapi_mcp.config import Settings
from keyapi_mcp.presentation.render import render_text
from keyapi_mcp.server import build_server
from keyapi_mcp.surface.app import PRODUCTS_VIEW_URI, VIEW_NOTE, icons
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "app-products.png"
DEMO_VIDEOS = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS, ZERO_VIEWS, NO_PRODUCTS, RESELLS]
SCREENSHOT_WIDTH = 820
CHART_TOP = 12  # bars the view draws at most (CHART_TOP in products.html)
WAIT_MS = 10_000  # a bound on any one wait in the browser; the page is ready far sooner


def apps_client_extension() -> Any:
    """What an MCP Apps host advertises in `initialize` (the extension with its HTML MIME type)."""
    return advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})


def demo_server() -> Any:
    # A fixed clock: two servers built with it give byte-identical results for the same call.
    return build_server(Settings(_env_file=None), demo=True, clock=Clock())


# ---------------------------------------------------------------------------------------------
# Without a browser: what the server declares, and what each kind of client gets back


@pytest.mark.anyio
async def test_the_tool_is_bound_to_a_strict_csp_view_resource_and_the_extension_is_advertised():
    async with Client(demo_server(), extensions=[apps_client_extension()]) as client:
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert (tools[TOOL].meta or {})["ui"] == {"resourceUri": PRODUCTS_VIEW_URI}
        assert "ui" not in (tools["get_credit_usage"].meta or {})
        listed = {str(resource.uri): resource for resource in (await client.list_resources()).resources}
        assert listed[PRODUCTS_VIEW_URI].mime_type == APP_MIME_TYPE
        (content,) = (await client.read_resource(PRODUCTS_VIEW_URI)).contents
    assert content.mime_type == APP_MIME_TYPE
    ui = (content.meta or {})["ui"]
    # Every domain list declared, and empty: the view may reach nothing outside itself.
    assert ui["csp"] == {"connectDomains": [], "resourceDomains": [], "frameDomains": [], "baseUriDomains": []}
    html = content.text  # type: ignore[union-attr]
    # The only URL in the view is the SVG namespace name (an identifier, never fetched); nothing has a src.
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "src=" not in html and "<link" not in html


@pytest.mark.anyio
async def test_server_and_both_tools_show_one_title_and_the_bundled_svg_icon():
    async with Client(demo_server()) as client:
        server_info = client.server_info
        tools = (await client.list_tools()).tools
    assert server_info is not None and server_info.title and server_info.icons == icons()
    (icon,) = icons()
    assert icon.mime_type == "image/svg+xml" and icon.src.startswith("data:image/svg+xml;base64,")
    svg = ET.fromstring(base64.b64decode(icon.src.split(",", 1)[1]))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    for tool in tools:
        assert tool.title and tool.icons == icons()
        assert tool.annotations is not None and tool.annotations.title is None, "one title per tool"


async def _call(client: Client) -> Any:
    return await client.call_tool(TOOL, {"video_ids": DEMO_VIDEOS})


@pytest.mark.anyio
async def test_a_client_without_apps_gets_exactly_the_plain_result_and_an_apps_host_one_more_line():
    async with Client(demo_server()) as plain_client:
        plain = await _call(plain_client)
    async with Client(demo_server(), extensions=[apps_client_extension()]) as apps_client:
        with_view = await _call(apps_client)
    plain_text = text_of(plain)
    assert plain_text == render_text(parsed(plain))  # the text the formatter makes, nothing added
    assert VIEW_NOTE not in plain_text
    assert "ui" not in (plain.meta or {})
    assert text_of(with_view) == f"{plain_text}\n{VIEW_NOTE}"
    assert with_view.structured_content == plain.structured_content


# ---------------------------------------------------------------------------------------------
# In Chromium: the host page, the view, the real result


@dataclass(frozen=True)
class DemoCall:
    html: str
    csp_meta: dict[str, list[str]]
    arguments: dict[str, Any]
    result: dict[str, Any]  # the CallToolResult as it crosses the wire (camelCase)
    error: dict[str, Any]  # a failed call's result, same form


async def _demo_call() -> DemoCall:
    arguments = {"video_ids": DEMO_VIDEOS}
    async with Client(demo_server(), extensions=[apps_client_extension()]) as client:
        (content,) = (await client.read_resource(PRODUCTS_VIEW_URI)).contents
        result = await client.call_tool(TOOL, arguments)
        error = await client.call_tool(TOOL, {"video_ids": ["not-a-video"]})
    assert not result.is_error and error.is_error
    return DemoCall(
        html=content.text,  # type: ignore[union-attr]
        csp_meta=(content.meta or {})["ui"]["csp"],
        arguments=arguments,
        result=result.model_dump(mode="json", by_alias=True, exclude_none=True),
        error=error.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def content_security_policy(csp: dict[str, list[str]]) -> str:
    """The CSP a host builds from a resource's `_meta.ui.csp` (the MCP Apps spec's construction)."""
    resources = " ".join(csp.get("resourceDomains", []))
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'unsafe-inline' {resources}".strip(),
            f"style-src 'self' 'unsafe-inline' {resources}".strip(),
            f"connect-src 'self' {' '.join(csp.get('connectDomains', []))}".strip(),
            f"img-src 'self' data: {resources}".strip(),
            f"font-src 'self' {resources}".strip(),
            f"media-src 'self' data: {resources}".strip(),
            f"frame-src {' '.join(csp.get('frameDomains', [])) or chr(39) + 'none' + chr(39)}",
            "object-src 'none'",
            f"base-uri {' '.join(csp.get('baseUriDomains', [])) or chr(39) + 'self' + chr(39)}",
        ]
    )


# The host side of MCP Apps: answer ui/initialize with a host context, wait for the view's `initialized`,
# then send the tool input and the tool result; follow the view's size reports. Every message the view
# sends is kept in `hostLog` for the test.
HOST_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MCP Apps test host</title><link rel="icon" href="data:,">
<style>body { margin: 0; background: #e9ebef; padding: 12px; }
iframe { border: 0; width: 100%; height: 120px; display: block; background: transparent; }</style></head>
<body><iframe id="view" sandbox="allow-scripts" title="KeyAPI products view"></iframe>
<script>
window.hostLog = [];
window.startHost = ({ src, hostContext, toolInput, toolResult }) => {
  const frame = document.getElementById("view");
  window.addEventListener("message", (event) => {
    if (event.source !== frame.contentWindow) return;
    const msg = event.data;
    window.hostLog.push(msg);
    const send = (m) => frame.contentWindow.postMessage({ jsonrpc: "2.0", ...m }, "*");
    if (msg.method === "ui/initialize") {
      send({ id: msg.id, result: { protocolVersion: "2026-01-26", hostInfo: { name: "test-host", version: "1" },
                                   hostCapabilities: {}, hostContext } });
    } else if (msg.method === "ui/notifications/initialized") {
      send({ method: "ui/notifications/tool-input", params: { arguments: toolInput } });
      send({ method: "ui/notifications/tool-result", params: toolResult });
    } else if (msg.method === "ui/notifications/size-changed") {
      frame.style.height = `${msg.params.height}px`;
    }
  });
  frame.src = src;
};
</script></body></html>"""


class _HostServer:
    """The test host on 127.0.0.1: the host page, and the view served with the resource's CSP."""

    def __init__(self, view_html: str, csp: str, host_page: str = HOST_PAGE) -> None:
        pages = {
            "/host.html": (host_page.encode(), {}),
            "/view.html": (view_html.encode(), {"Content-Security-Policy": csp}),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, headers = pages.get(self.path, (b"not found", {}))
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _HostServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def demo_call() -> DemoCall:
    # In a thread of its own: Playwright's sync API keeps an event loop running in the test thread.
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(anyio.run, _demo_call).result(timeout=60)


@pytest.fixture(scope="module")
def host(demo_call: DemoCall) -> Iterator[_HostServer]:
    with _HostServer(demo_call.html, content_security_policy(demo_call.csp_meta)) as server:
        yield server


def chromium_executable(playwright: Playwright) -> str | None:
    """The browser to drive: Debian's chromium when installed (what CI runs), else one on PATH (Homebrew's, a
    distribution's), else the one `playwright install chromium` put in Playwright's cache; None without any."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    bundled = playwright.chromium.executable_path
    return bundled if bundled and Path(bundled).is_file() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        executable = chromium_executable(playwright)
        if executable is None:
            reason = (
                f"no Chromium to run the App view in: neither {CHROMIUM} (Debian's chromium package, which "
                "scripts/test.sh installs as root) nor one on PATH nor Playwright's (`.venv/bin/playwright install "
                "chromium`)"
            )
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


@dataclass
class Rendered:
    page: Page
    errors: list[str]
    requests: list[str]

    @property
    def view(self) -> Any:
        return self.page.frame_locator("#view")


def render(
    browser: Browser,
    host: _HostServer,
    call: DemoCall,
    *,
    width: int,
    theme: str,
    variables: dict[str, str],
    ready: str = "#rows tr",
) -> Rendered:
    page = browser.new_page(viewport={"width": width, "height": 900}, locale="en-US")
    page.set_default_timeout(WAIT_MS)
    rendered = Rendered(page=page, errors=[], requests=[])

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            rendered.errors.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: rendered.errors.append(f"page error: {exc}"))
    page.on("request", lambda request: rendered.requests.append(request.url))
    page.goto(f"{host.url}/host.html")
    page.evaluate(
        "(args) => window.startHost(args)",
        {
            "src": f"{host.url}/view.html",
            "hostContext": {
                "theme": theme,
                "locale": "en-US",
                "displayMode": "inline",
                "containerDimensions": {"maxWidth": width},
                "styles": {"variables": variables},
            },
            "toolInput": call.arguments,
            "toolResult": call.result,
        },
    )
    rendered.view.locator(ready).first.wait_for()
    return rendered


def money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def product_totals(structured: dict[str, Any]) -> list[tuple[str, float]]:
    """GMV per product over all videos, highest first (ties by id), as the chart should show it."""
    totals: dict[str, float] = {}
    for video in structured["videos"]:
        for product in video["products"]:
            totals[product["product_id"]] = totals.get(product["product_id"], 0.0) + (product["gmv"] or 0.0)
    return sorted(((pid, round(gmv, 2)) for pid, gmv in totals.items()), key=lambda item: (-item[1], item[0]))


def bars(rendered: Rendered) -> list[tuple[str, float, str]]:
    """(id, GMV, bar width) of each drawn bar, top to bottom (one round trip to the browser)."""
    drawn = rendered.view.locator("#chart g.bar-row").evaluate_all(
        "rows => rows.map(g => [g.dataset.id, g.dataset.gmv, g.querySelector('rect.bar').getAttribute('width')])"
    )
    return [(pid, float(gmv), width) for pid, gmv, width in drawn]


def table_rows(rendered: Rendered) -> list[tuple[str, str, str, str]]:
    """(video, product, units, GMV) of each table row as displayed, top to bottom."""
    rows = rendered.view.locator("#rows tr").evaluate_all(
        "rows => rows.map(tr => [tr.dataset.video, tr.dataset.product,"
        " tr.cells[2].textContent, tr.cells[3].textContent])"
    )
    return [tuple(row) for row in rows]


LIGHT_HOST_VARIABLES = {"--color-background-primary": "#ffffff", "--font-sans": "system-ui, sans-serif"}


def test_the_view_renders_the_real_result_in_chromium_and_its_table_and_chart_match(
    browser: Browser, host: _HostServer, demo_call: DemoCall
):
    structured = demo_call.result["structuredContent"]
    rendered = render(browser, host, demo_call, width=SCREENSHOT_WIDTH, theme="light", variables=LIGHT_HOST_VARIABLES)
    try:
        view = rendered.view
        # The handshake, view side: ui/initialize first (with the Apps protocol version), then `initialized`.
        log = rendered.page.evaluate("window.hostLog")
        methods = [message.get("method") for message in log]
        assert methods[:2] == ["ui/initialize", "ui/notifications/initialized"], methods
        assert log[0]["params"]["protocolVersion"] == "2026-01-26"
        assert "ui/notifications/size-changed" in methods

        # Table: one row per (video, product) of the result, GMV highest first.
        expected = {
            (video["video_id"], product["product_id"], f"{product['units_sold']:,}", money(product["gmv"]))
            for video in structured["videos"]
            for product in video["products"]
        }
        shown = table_rows(rendered)
        assert len(shown) == sum(len(video["products"]) for video in structured["videos"]) == len(expected)
        assert set(shown) == expected
        gmv_order = [float(gmv.replace(",", "")) for *_, gmv in shown]
        assert gmv_order == sorted(gmv_order, reverse=True)
        assert view.locator('th[data-key="gmv"]').get_attribute("aria-sort") == "descending"
        videos = len(structured["videos"])
        assert view.locator("caption").inner_text().startswith(f"{len(expected)} product rows across {videos} videos")

        # Chart by product: the top products by GMV summed over the videos, the longest bar the highest.
        totals = product_totals(structured)
        drawn = bars(rendered)
        assert [(pid, gmv) for pid, gmv, _ in drawn] == totals[:CHART_TOP]
        assert drawn[0][2] == "100%"
        assert float(drawn[-1][2].rstrip("%")) == pytest.approx(100 * totals[CHART_TOP - 1][1] / totals[0][1])
        assert view.locator("#chart").get_attribute("role") == "img"
        assert view.locator("#chart-text li").count() == len(drawn)
        assert "top 12 of 18" in (view.locator("#chart-label").text_content() or "")

        # Demo flag, credits, and the id without products are on screen.
        assert view.locator(".badge.demo").is_visible()
        credits = structured["credits"]
        credit_line = view.locator("#credits").inner_text()
        assert f"{credits['spent']} spent on this call" in credit_line
        assert f"{credits['spent_today']} of {credits['daily_limit']:,} spent today" in credit_line
        assert NO_PRODUCTS in view.locator("#notices").inner_text()

        # The whole view on screen (the page grows to the frame's reported height), then its picture.
        frame_height = rendered.page.locator("#view").evaluate("el => el.getBoundingClientRect().height")
        rendered.page.set_viewport_size({"width": SCREENSHOT_WIDTH, "height": int(frame_height) + 24})
        rendered.page.locator("#view").screenshot(path=str(SCREENSHOT))

        # Chart by video: one bar per video with products, its GMV.
        view.get_by_role("button", name="By video", exact=True).click()
        assert view.get_by_role("button", name="By video", exact=True).get_attribute("aria-pressed") == "true"
        by_video = sorted(((v["video_id"], v["gmv"]) for v in structured["videos"]), key=lambda i: (-i[1], i[0]))
        assert [(vid, gmv) for vid, gmv, _ in bars(rendered)] == by_video

        # Sorting: a click on Units sorts by units (descending first), a second click reverses it.
        view.get_by_role("button", name="Units", exact=True).click()
        units_header = view.locator('th[data-key="units_sold"]')
        assert units_header.get_attribute("aria-sort") == "descending"
        assert view.locator('th[data-key="gmv"]').get_attribute("aria-sort") == "none"
        units = [int(u.replace(",", "")) for _, _, u, _ in table_rows(rendered)]
        assert units == sorted(units, reverse=True)
        view.get_by_role("button", name="Units", exact=True).click()
        assert units_header.get_attribute("aria-sort") == "ascending"
        units = [int(u.replace(",", "")) for _, _, u, _ in table_rows(rendered)]
        assert units == sorted(units)
        view.get_by_role("button", name="Product", exact=True).click()
        products = [pid for _, pid, _, _ in table_rows(rendered)]
        assert products == sorted(products)
        assert set(table_rows(rendered)) == expected  # re-sorting keeps every row

        # Nothing but the host page and the view was requested, and nothing went wrong.
        assert set(rendered.requests) == {f"{host.url}/host.html", f"{host.url}/view.html"}
        assert rendered.errors == []
    finally:
        rendered.page.close()


def _luminance(css_color: str) -> float:
    r, g, b = (int(part) for part in css_color[css_color.index("(") + 1 : css_color.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_the_view_follows_a_dark_host_and_fits_a_narrow_frame_without_errors(
    browser: Browser, host: _HostServer, demo_call: DemoCall
):
    rendered = render(browser, host, demo_call, width=360, theme="dark", variables={})
    try:
        view = rendered.view
        background = view.locator("body").evaluate("el => getComputedStyle(el).backgroundColor")
        text = view.locator("body").evaluate("el => getComputedStyle(el).color")
        assert _luminance(background) < 0.2 < 0.8 < _luminance(text), (background, text)
        # The host switches to light: the view follows (ui/notifications/host-context-changed).
        rendered.page.evaluate(
            """() => document.getElementById("view").contentWindow.postMessage(
                {jsonrpc: "2.0", method: "ui/notifications/host-context-changed", params: {theme: "light"}}, "*")"""
        )
        view.locator('html[data-theme="light"]').wait_for(state="attached")
        background = view.locator("body").evaluate("el => getComputedStyle(el).backgroundColor")
        assert _luminance(background) > 0.8, background
        # The page itself never scrolls sideways; only the table scrolls inside its own box.
        overflow = view.locator("html").evaluate("el => el.scrollWidth - el.clientWidth")
        assert overflow <= 0
        assert view.locator('th[data-key="region"]').is_hidden()  # secondary columns give way
        assert len(table_rows(rendered)) == sum(
            len(v["products"]) for v in demo_call.result["structuredContent"]["videos"]
        )
        assert rendered.errors == []
    finally:
        rendered.page.close()


def test_an_error_result_is_shown_as_its_text(browser: Browser, host: _HostServer, demo_call: DemoCall):
    failed = DemoCall(demo_call.html, demo_call.csp_meta, {"video_ids": ["not-a-video"]}, demo_call.error, {})
    rendered = render(browser, host, failed, width=600, theme="light", variables={}, ready="#status")
    try:
        code = demo_call.error["content"][0]["text"].split()[0]
        assert code.startswith("[") and code.endswith("]")
        rendered.view.locator("#status").filter(has_text=code).wait_for()
        assert rendered.view.locator("#result").is_hidden()
        assert rendered.errors == []
    finally:
        rendered.page.close()
