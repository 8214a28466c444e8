"""The App view continues a result: the next page and refreshes through the app-only tool, with their cost and
the same consent as the model's calls; the table as CSV (`ui/download-file`); selected rows to the model
(`ui/update-model-context`). In headless Chromium against a host page that offers those capabilities and
proxies the view's `tools/call` to a real keyapi-mcp server (through the SDK client, in a thread of its own).
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from helpers import TEST_API_KEY, THREE_ROWS, TOOL, TWELVE_ROWS, Clock, make_settings
from mcp import Client
from playwright.sync_api import Browser, sync_playwright
from test_app import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _HostServer, apps_client_extension, content_security_policy

from keyapi_mcp.server import build_server
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.app import APP_TOOL, PRODUCTS_VIEW_URI, QUOTE_NOTE
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

ALL_CAPABILITIES = {"serverTools": {}, "downloadFile": {}, "updateModelContext": {"text": {}}}

# The host side of MCP Apps, with the view's requests answered: tools/call goes to the server (only for tools
# whose visibility includes "app", as the spec requires of hosts), downloads and model context are recorded.
HOST_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MCP Apps test host</title><link rel="icon" href="data:,">
<style>body { margin: 0; padding: 12px; } iframe { border: 0; width: 100%; height: 120px; display: block; }</style>
</head><body><iframe id="view" sandbox="allow-scripts" title="KeyAPI products view"></iframe>
<script>
window.hostLog = []; window.downloads = []; window.modelContext = [];
window.startHost = ({ src, hostCapabilities, appTools, toolInput, toolResult }) => {
  const frame = document.getElementById("view");
  window.addEventListener("message", (event) => {
    if (event.source !== frame.contentWindow) return;
    const msg = event.data;
    window.hostLog.push(msg);
    const send = (m) => frame.contentWindow.postMessage({ jsonrpc: "2.0", ...m }, "*");
    const refuse = (message) => send({ id: msg.id, error: { code: -32000, message } });
    if (msg.method === "ui/initialize") {
      send({ id: msg.id, result: { protocolVersion: "2026-01-26", hostInfo: { name: "test-host", version: "1" },
                                   hostCapabilities, hostContext: { theme: "light", locale: "en-US" } } });
    } else if (msg.method === "ui/notifications/initialized") {
      send({ method: "ui/notifications/tool-input", params: { arguments: toolInput } });
      send({ method: "ui/notifications/tool-result", params: toolResult });
    } else if (msg.method === "ui/notifications/size-changed") {
      frame.style.height = `${msg.params.height}px`;
    } else if (msg.method === "tools/call") {
      if (!appTools.includes(msg.params.name)) return refuse(`${msg.params.name} is not callable by the app`);
      window.callServerTool(msg.params).then((result) => send({ id: msg.id, result }), (e) => refuse(String(e)));
    } else if (msg.method === "ui/download-file") {
      window.downloads.push(msg.params);
      send({ id: msg.id, result: {} });
    } else if (msg.method === "ui/update-model-context") {
      window.modelContext.push(msg.params);
      send({ id: msg.id, result: {} });
    }
  });
  frame.src = src;
};
</script></body></html>"""


class LiveServer:
    """A keyapi-mcp server (fake upstream, real SQLite ledger) held open by the SDK client in a portal thread."""

    def __init__(self, portal: BlockingPortal, tmp_path: Path) -> None:
        self.fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
        clock = Clock()
        self.store = SQLiteStore(tmp_path / "state.sqlite3", clock=clock)
        # A threshold of 1: any call that may spend more than 1 credit asks first.
        server = build_server(
            make_settings(confirm_above_credits=1),
            transport=mock_transport(self.fake),
            store=self.store,
            clock=clock,
        )
        self.portal = portal
        self._client_cm = portal.wrap_async_context_manager(Client(server, extensions=[apps_client_extension()]))
        self.client: Client = self._client_cm.__enter__()

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.portal.call(self.client.call_tool, name, arguments)
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    def app_tools(self) -> list[str]:
        tools = self.portal.call(self.client.list_tools).tools
        return [t.name for t in tools if "app" in ((t.meta or {}).get("ui", {}).get("visibility") or ["model", "app"])]

    def view(self) -> tuple[str, dict[str, list[str]]]:
        (content,) = self.portal.call(self.client.read_resource, PRODUCTS_VIEW_URI).contents
        return content.text, (content.meta or {})["ui"]["csp"]  # type: ignore[union-attr]

    def close(self) -> None:
        self._client_cm.__exit__(None, None, None)
        self.portal.call(self.store.close)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with start_blocking_portal() as portal:
        server = LiveServer(portal, tmp_path)
        try:
            yield server
        finally:
            server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which("chromium") == CHROMIUM, "Debian's chromium is installed by scripts/test.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


def open_view(
    browser: Browser,
    live: LiveServer,
    first: dict[str, Any],
    arguments: dict[str, Any],
    caps: dict,
    ready: str = "#rows tr",
) -> Any:
    html, csp = live.view()
    host = _HostServer(html, content_security_policy(csp), host_page=HOST_PAGE).__enter__()
    page = browser.new_page(viewport={"width": 900, "height": 1200}, locale="en-US")
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.expose_function("callServerTool", lambda params: live.call(params["name"], params.get("arguments") or {}))
    page.goto(f"{host.url}/host.html")
    page.evaluate(
        "(args) => window.startHost(args)",
        {
            "src": f"{host.url}/view.html",
            "hostCapabilities": caps,
            "appTools": live.app_tools(),
            "toolInput": arguments,
            "toolResult": first,
        },
    )
    view = page.frame_locator("#view")
    view.locator(ready).first.wait_for()
    return host, page, view, errors


def shown_rows(view: Any) -> set[tuple[str, str]]:
    return set(
        map(
            tuple,
            view.locator("#rows tr").evaluate_all("rows => rows.map(tr => [tr.dataset.video, tr.dataset.product])"),
        )
    )


def test_the_app_only_tool_is_offered_to_the_view_and_hidden_from_the_model(live: LiveServer):
    tools = {t.name: t for t in live.portal.call(live.client.list_tools).tools}
    assert (tools[APP_TOOL].meta or {})["ui"] == {"resourceUri": PRODUCTS_VIEW_URI, "visibility": ["app"]}
    assert "visibility" not in (tools[TOOL].meta or {})["ui"]  # the model's tool: visible to both
    assert APP_TOOL in live.app_tools()


@pytest.mark.anyio
async def test_a_client_without_mcp_apps_is_not_offered_the_app_only_tool():
    async with Client(build_server(make_settings(), demo=True)) as plain:
        names = {t.name for t in (await plain.list_tools()).tools}
    assert TOOL in names and APP_TOOL not in names


def test_the_view_loads_the_next_page_after_the_users_yes_and_exports_and_shares_rows(
    browser: Browser, live: LiveServer
):
    arguments = {"video_ids": [TWELVE_ROWS, THREE_ROWS], "max_credits": 1}
    first = live.call(TOOL, arguments)
    assert first["structuredContent"]["next_page_num"] == 2 and len(live.fake.requests) == 1
    host, page, view, errors = open_view(browser, live, first, arguments, ALL_CAPABILITIES)
    try:
        assert len(shown_rows(view)) == 10
        # Load the rest: the server quotes it; the view shows the quote and spends nothing until the user agrees.
        view.locator("#load-more").click()
        consent = view.locator("#consent")
        consent.wait_for()
        assert "up to 5 KeyAPI credits" in consent.inner_text()
        assert len(live.fake.requests) == 1
        view.get_by_role("button", name="Spend up to 5 credits").click()
        view.locator("#action-status").filter(has_text="That load spent 1 credit").wait_for()
        assert len(live.fake.requests) == 2  # page 2 only: page 1 came from the page cache
        data = demo_dataset()
        expected = {(vid, str(row["product_id"])) for vid in (TWELVE_ROWS, THREE_ROWS) for row in data[vid]}
        assert shown_rows(view) == expected
        assert view.locator("#load-more").is_hidden()
        assert "15 product rows across 2 videos" in view.locator("caption").inner_text()

        # Two rows to the model, as text and structured rows.
        boxes = view.locator("#rows input.pick")
        boxes.nth(0).check()
        boxes.nth(1).check()
        view.get_by_role("button", name="Give selected rows to the model").click()
        view.locator("#action-status").filter(has_text="The model now has the 2 selected rows").wait_for()
        (context,) = page.evaluate("window.modelContext")
        picked = {(r["video_id"], r["product_id"]) for r in context["structuredContent"]["selected_rows"]}
        assert len(picked) == 2 and picked <= expected
        assert all(f"product {pid}" in context["content"][0]["text"] for _, pid in picked)

        # The whole table as CSV, through the host.
        view.get_by_role("button", name="Download CSV").click()
        view.locator("#action-status").filter(has_text="as keyapi-video-products.csv").wait_for()
        ((item,),) = [d["contents"] for d in page.evaluate("window.downloads")]
        assert item["resource"]["mimeType"] == "text/csv"
        assert item["resource"]["uri"] == "file:///keyapi-video-products.csv"
        table = list(csv.reader(io.StringIO(item["resource"]["text"])))
        assert table[0] == ["video_id", "product_id", "units_sold", "gmv", "avg_price", "views", "region"]
        assert {(r[0], r[1]) for r in table[1:]} == expected and len(table) == 16

        # Refreshing a selected video is quoted too; cancelling spends nothing.
        videos = len({vid for vid, _ in picked})
        view.get_by_role("button", name=f"Refresh {videos} selected video{'s' if videos > 1 else ''}").click()
        consent.wait_for()
        view.get_by_role("button", name="Cancel").click()
        view.locator("#action-status").filter(has_text="Nothing was spent.").wait_for()
        assert len(live.fake.requests) == 2
        assert errors == []
    finally:
        page.close()
        host.__exit__(None, None, None)


def test_a_host_without_tool_calls_downloads_or_model_context_keeps_todays_view(browser: Browser, live: LiveServer):
    arguments = {"video_ids": [TWELVE_ROWS], "max_credits": 1}
    first = live.call(TOOL, arguments)
    host, page, view, errors = open_view(browser, live, first, arguments, {})
    try:
        assert len(shown_rows(view)) == 10
        assert view.locator("#actions").is_hidden()
        assert view.locator("#rows input.pick").count() == 0
        assert errors == []
    finally:
        page.close()
        host.__exit__(None, None, None)


def test_a_quoted_model_call_can_be_confirmed_in_the_view_where_the_host_cannot_ask(browser: Browser, live: LiveServer):
    # A host without elicitation (claude.ai, say) renders the view for the model's [confirmation_required] answer.
    arguments = {"video_ids": [TWELVE_ROWS, THREE_ROWS], "max_credits": 5}
    first = live.call(TOOL, arguments)
    assert first["isError"] and first["structuredContent"]["confirmation"]["credits_at_most"] == 5
    assert first["content"][0]["text"].endswith(QUOTE_NOTE)  # the model learns the view can confirm it
    host, page, view, errors = open_view(browser, live, first, arguments, ALL_CAPABILITIES, ready="#consent")
    try:
        assert "asks before spending" in view.locator("#status").inner_text()
        assert live.fake.requests == []
        view.get_by_role("button", name="Spend up to 5 credits").click()
        view.locator("#action-status").filter(has_text="That load spent 2 credits").wait_for()
        data = demo_dataset()
        assert shown_rows(view) == {(v, str(r["product_id"])) for v in (TWELVE_ROWS, THREE_ROWS) for r in data[v]}
        assert view.locator("#status").is_hidden() and len(live.fake.requests) == 2
        assert errors == []
    finally:
        page.close()
        host.__exit__(None, None, None)
