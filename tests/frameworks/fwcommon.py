"""What every framework driver shares (imported by the drivers, which run in their framework's own environment).

A driver is started by tests/test_frameworks.py as `<framework env>/bin/python tests/frameworks/driver_X.py
REQUEST_JSON`; it connects the framework to keyapi-mcp (stdio: the framework spawns the server itself; HTTP: a
server the test started), drives it as an agent would, and prints one JSON report on stdout, which the test
judges. So that one broken step does not hide the others, a driver records each step's failure in the report
instead of stopping.

The provider requests are built offline: each provider SDK is pointed at `ProviderStub`, an HTTP server on
127.0.0.1 that records the request bodies the SDK serialized and answers with a scripted response (first a
call of the tool, then a final text), so the framework runs its own loop: model → tool call → MCP → result →
the next model request, which is what the test reads.

Only the standard library here: the drivers' environments hold nothing but their framework.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOOL = "get_video_products"
DUMMY_KEY = "sk-offline-test-key"  # never leaves 127.0.0.1: every SDK is pointed at ProviderStub
BAD_ID = "not-a-video"  # the server answers it with [invalid_input]


@dataclass
class Request:
    """The arguments tests/test_frameworks.py passes to a driver (one JSON argument)."""

    command: str  # the keyapi-mcp console script
    args: list[str]  # its arguments: ["--demo"]
    env: dict[str, str]  # the server's whole environment
    http_url: str | None  # http://127.0.0.1:PORT/mcp of a server the test started, or None

    @classmethod
    def from_argv(cls) -> Request:
        raw = json.loads(sys.argv[1])
        return cls(command=raw["command"], args=raw["args"], env=raw["env"], http_url=raw.get("http_url"))

    @property
    def transports(self) -> list[str]:
        return ["stdio", "http"] if self.http_url else ["stdio"]


@dataclass
class Report:
    """What a driver saw, as JSON: steps (name → value) and the failures of the steps that raised."""

    framework: str
    steps: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    async def step(self, name: str, action: Callable[[], Awaitable[Any]]) -> Any:
        try:
            value = await action()
        except Exception as exc:
            self.failures[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            return None
        self.steps[name] = value
        return value

    def emit(self) -> None:
        json.dump({"framework": self.framework, "steps": self.steps, "failures": self.failures}, sys.stdout)
        sys.stdout.write("\n")


def demo_ids(description: str) -> list[str]:
    """The demo's videos with products, as --demo names them in the tool description."""
    match = re.search(r"Videos with products: ([0-9, ]+)", description)
    assert match, "the --demo tool description names no demo videos"
    return [vid.strip() for vid in match.group(1).split(",") if vid.strip()]


def call_arguments(description: str) -> dict[str, Any]:
    """The arguments a model would send: two demo videos, one of them the one re-selling products."""
    ids = demo_ids(description)
    return {"video_ids": [ids[1], ids[-1]], "top": 2}


# Where a Gemini function declaration holds its parameters, as the SDKs serialize it.
GEMINI_PARAMETERS = ("parameters", "parametersJsonSchema", "parameters_json_schema")


def declared_schema(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """The tool's parameter schema in a provider request the SDK serialized."""
    for tool in body.get("tools", []):
        if provider == "gemini":
            for declaration in tool.get("functionDeclarations", []):
                if declaration["name"] == TOOL:
                    return next((declaration[k] for k in GEMINI_PARAMETERS if declaration.get(k)), {})
            continue
        function = tool.get("function", tool)  # chat completions nest it; responses and anthropic do not
        if function.get("name") == TOOL:
            return function.get("parameters") or function.get("input_schema") or {}
    raise AssertionError(f"the {provider} request declares no {TOOL}")


def as_declared(arguments: dict[str, Any]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """The arguments as a model sends them, following the declaration in the request: in the declared types (a
    STRING `top` comes back as "2") and with every argument declared required (a default where the model has
    no value of its own), so a conversion that changes a type or a requirement shows up as the server's answer
    to what the model sent."""

    def typed(provider: str, body: dict[str, Any]) -> dict[str, Any]:
        schema = declared_schema(provider, body)
        declared = schema.get("properties", {})
        sent = {name: declared[name].get("default") for name in schema.get("required", []) if name in declared}
        sent.update(arguments)
        return {
            key: str(value)
            if value is not None and str(declared.get(key, {}).get("type", "")).lower() == "string"
            else value
            for key, value in sent.items()
        }

    return typed


# --------------------------------------------------------------------------------------------------------------
# The provider stub


def _openai_chat(step: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if step is None:
        message: dict[str, Any] = {"role": "assistant", "content": "done"}
        finish = "stop"
    else:
        name, arguments = step
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _openai_responses(step: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if step is None:
        output: list[dict[str, Any]] = [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "done", "annotations": []}],
            }
        ]
    else:
        name, arguments = step
        output = [
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": name,
                "arguments": json.dumps(arguments),
                "status": "completed",
            }
        ]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "model": "gpt-4o-mini",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _anthropic(step: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if step is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": "done"}]
        stop = "end_turn"
    else:
        name, arguments = step
        content = [{"type": "tool_use", "id": "toolu_1", "name": name, "input": arguments}]
        stop = "tool_use"
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def _gemini(step: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if step is None:
        parts: list[dict[str, Any]] = [{"text": "done"}]
    else:
        name, arguments = step
        parts = [{"functionCall": {"name": name, "args": arguments}}]
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        "modelVersion": "gemini-3.5-flash-lite",
    }


def _anthropic_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Messages API's stream events for one complete message."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}}
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            {"type": "content_block_start", "index": index, "content_block": start},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index},
        ]
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    return [*events, {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 1}}, {"type": "message_stop"}]


def _openai_chat_events(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat Completions stream chunks for one complete answer."""
    (choice,) = completion["choices"]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    chunk = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    return [
        chunk | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
        chunk | {"choices": [], "usage": completion["usage"]},
    ]


def provider_of(path: str) -> str:
    if path.endswith("/chat/completions"):
        return "openai_chat"
    if path.endswith("/responses"):
        return "openai_responses"
    if path.endswith("/messages"):
        return "anthropic"
    if ":generateContent" in path:
        return "gemini"
    raise ValueError(f"no stubbed provider endpoint at {path}")


ANSWERS = {"openai_chat": _openai_chat, "openai_responses": _openai_responses, "anthropic": _anthropic}
ANSWERS["gemini"] = _gemini
STREAMS = {"anthropic": _anthropic_events, "openai_chat": _openai_chat_events}


# A scripted answer: call this tool with these arguments (or with what a function of the request returns).
Step = tuple[str, dict[str, Any] | Callable[[str, dict[str, Any]], dict[str, Any]]]


class ProviderStub:
    """An HTTP server on 127.0.0.1 standing in for the model providers' APIs.

    `script(provider, steps)` queues the answers for one provider: a (tool name, arguments) pair answers with a
    call of that tool (the arguments may be a function of the provider and the request body), and once the
    queue is empty every request is answered with the final text "done".
    `requests[provider]` holds the JSON bodies received, in order.
    """

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self._scripts: dict[str, list[Step]] = {}
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                provider = provider_of(self.path.split("?", 1)[0])
                with stub._lock:
                    stub.requests.setdefault(provider, []).append(body)
                    queue = stub._scripts.get(provider, [])
                    step = queue.pop(0) if queue else None
                if step is not None and callable(step[1]):
                    step = (step[0], step[1](provider, body))
                answer = ANSWERS[provider](step)
                if body.get("stream"):
                    self._stream(provider, answer)
                    return
                self._send(json.dumps(answer).encode(), "application/json")

            def _stream(self, provider: str, answer: dict[str, Any]) -> None:
                events = STREAMS[provider](answer)
                if provider == "anthropic":
                    text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
                else:
                    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                self._send(text.encode(), "text/event-stream")

            def _send(self, answer: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, provider: str, *steps: Step) -> None:
        with self._lock:
            self._scripts[provider] = list(steps)
            self.requests[provider] = []

    def last(self, provider: str) -> dict[str, Any]:
        return self.requests[provider][-1]

    def __enter__(self) -> ProviderStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def drive(framework: str, run: Callable[[Request, str, Report, ProviderStub], Awaitable[None]]) -> None:
    """A driver's whole run: one session per transport asked, against one provider stub, then the report."""
    import asyncio

    async def main() -> None:
        request = Request.from_argv()
        report = Report(framework)
        with ProviderStub() as stub:
            for transport in request.transports:
                await report.step(f"{transport}.session", lambda t=transport: run(request, t, report, stub))
        report.emit()

    asyncio.run(main())
