"""keyapi-mcp through the agent frameworks its users reach it from (docs/clients.md), each as its users run it.

Every framework gets its own virtual environment, built by uv from the pinned lock file in
tests/frameworks/requirements/ (never the test environment: most of them pin `mcp<2`, and keyapi-mcp runs as its
own process anyway). The environments are kept in `.venv-frameworks/`, one directory per lock file and
interpreter (named by their hash), so a second run builds nothing; uv's cache sits beside them.

Each framework's driver (tests/frameworks/driver_*.py) runs once, in its environment, against the `--demo`
server over stdio (the framework spawns this checkout's console script, with an explicit environment) and over
Streamable HTTP on 127.0.0.1; it converts the tools for each provider the framework supports, lets the
framework call `get_video_products`, carries the result into the next provider request (serialized by the
provider's SDK and sent to a stub on 127.0.0.1: no network), and does the same with a call the server refuses.
The tests here judge the requests the providers would have received.

Outside CI an environment that cannot be built (no registry access) skips these tests with the reason; in CI
(CI=true) it fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import TOOL, connect, http_server_process, in_ci, make_settings, text_of
from installs import REGISTRY_VARIABLES, uv_binary

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS_DIR = Path(__file__).resolve().parent / "frameworks"
REQUIREMENTS = FRAMEWORKS_DIR / "requirements"
ENVS = REPO / ".venv-frameworks"
BUILD_TIMEOUT = 900.0  # a cold uv cache downloads a few hundred MB of wheels
DRIVER_TIMEOUT = 300.0
INTEGER_ARGUMENTS = ("max_credits", "page_num", "top")
REQUEST_ARGUMENTS = {"video_ids": ["9000000000000000001", "9000000000000000005"], "top": 2}  # fwcommon's choice


@dataclass(frozen=True)
class Framework:
    name: str  # the lock file and driver are requirements/<name>.txt and driver_<name>.py
    providers: tuple[str, ...]  # the provider request kinds the driver builds (fwcommon.provider_of)

    @property
    def lock(self) -> Path:
        return REQUIREMENTS / f"{self.name}.txt"

    @property
    def driver(self) -> Path:
        return FRAMEWORKS_DIR / f"driver_{self.name}.py"


FRAMEWORKS = {
    f.name: f
    for f in (
        Framework("langchain", ("openai_chat", "openai_chat_strict", "openai_responses", "anthropic", "gemini")),
        Framework("openai_agents", ("openai_responses", "openai_chat")),
        Framework("pydantic_ai", ("openai_chat", "openai_responses", "anthropic", "gemini")),
        Framework("llama_index", ("openai_chat",)),
        Framework("smolagents", ("openai_chat",)),
        Framework("fastmcp", ()),
    )
}
TRANSPORTS = ("stdio", "http")


def _uv_env(home: Path) -> dict[str, str]:
    env = {key: os.environ[key] for key in REGISTRY_VARIABLES if key in os.environ}
    env.update(
        {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "UV_CACHE_DIR": str(ENVS / ".uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_CONFIG": "1",
            "UV_NATIVE_TLS": "1",
        }
    )
    return env


def framework_env(framework: Framework, home: Path) -> Path:
    """The framework's environment (its python), built once per lock file and interpreter.

    Built under a temporary name and renamed when complete, so an interrupted build is never reused (only
    `bin/python` is run, which finds its environment relative to itself, so the rename is safe)."""
    key = hashlib.sha256(framework.lock.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = ENVS / f"{framework.name}-{key}"
    if venv.is_dir():
        return venv / "bin" / "python"
    for stale in ENVS.glob(f"{framework.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    building = ENVS / f".building-{framework.name}-{key}"
    shutil.rmtree(building, ignore_errors=True)
    python = building / "bin" / "python"
    for command in (
        [uv_binary(), "venv", "--quiet", "--python", sys.executable, str(building)],
        # Bytecode compiled at install: otherwise the drivers' imports are most of their run time.
        [uv_binary(), "pip", "sync", "--quiet", "--compile-bytecode", "--python", str(python), str(framework.lock)],
    ):
        done = subprocess.run(
            command,
            env=_uv_env(home),
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            reason = f"cannot build the {framework.name} environment ({' '.join(command[1:3])}): {done.stderr[-2000:]}"
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
    building.rename(venv)
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The `--demo` server over HTTP on 127.0.0.1 (one for all frameworks), and the environment for stdio ones."""
    root = tmp_path_factory.mktemp("frameworks-server")
    (root / "home").mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(root / "home"), "KEYAPI_STATE_DIR": str(root / "state")}
    logs: list[str] = []
    with http_server_process(root, env, logs, "--demo") as (_, base):
        yield f"{base}/mcp", env


@pytest.fixture(scope="module")
def reports(
    demo_server: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, Any]]]:
    """Each framework's report, produced on first use (environment build and driver run)."""
    url, env = demo_server
    home = tmp_path_factory.mktemp("frameworks-home")

    class Reports(dict[str, dict[str, Any]]):
        def __missing__(self, name: str) -> dict[str, Any]:
            framework = FRAMEWORKS[name]
            python = framework_env(framework, home)
            request = {
                "command": str(Path(sys.executable).parent / "keyapi-mcp"),
                "args": ["--demo"],
                "env": env,
                "http_url": url,
            }
            run = subprocess.run(
                [str(python), str(framework.driver), json.dumps(request)],
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(home)},
                cwd=home,
                capture_output=True,
                text=True,
                timeout=DRIVER_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            assert run.returncode == 0, f"the {name} driver failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
            report = json.loads(run.stdout.strip().splitlines()[-1])
            report["stderr"] = run.stderr
            self[name] = report
            return report

    yield Reports()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the server answers to the drivers' call, read through the SDK's own client: the facts the next
    provider request must carry (its product lines and summary; the video lines say whether they were cached)."""
    settings = make_settings(state_dir=tmp_path_factory.mktemp("frameworks-reference"))

    async def answer() -> str:
        async with connect(settings, demo=True) as client:
            return text_of(await client.call_tool(TOOL, REQUEST_ARGUMENTS))

    lines = anyio.run(answer).splitlines()
    return {"facts": [lines[1], *(line for line in lines if line.startswith("- "))]}


def _failures(report: dict[str, Any]) -> str:
    return "\n".join(f"{step}: {failure}" for step, failure in report["failures"].items())


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """Every (key, string) pair in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield key, item
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _declared(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    for tool in body.get("tools", []):
        if provider == "gemini":
            for declaration in tool.get("functionDeclarations", []):
                if declaration["name"] == TOOL:
                    return declaration.get("parameters") or declaration.get("parametersJsonSchema") or {}
            continue
        function = tool.get("function", tool)
        if function.get("name") == TOOL:
            return function.get("parameters") or function.get("input_schema") or {}
    raise AssertionError(f"the {provider} request declares no {TOOL}: {json.dumps(body)[:2000]}")


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a (possibly provider-dialect) schema allows, lower-cased: Gemini writes INTEGER."""
    found: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, list):
        found.update(str(k).lower() for k in kind)
    elif kind is not None:
        found.add(str(kind).lower())
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= _types(branch)
    if schema.get("nullable"):
        found.add("null")
    return found


def _provider_steps(framework: Framework) -> list[tuple[str, str]]:
    return [(transport, provider) for transport in TRANSPORTS for provider in framework.providers]


PROVIDER_CASES = [
    pytest.param(name, transport, provider, id=f"{name}-{transport}-{provider}")
    for name, framework in FRAMEWORKS.items()
    for transport, provider in _provider_steps(framework)
]
ALL_CASES = [pytest.param(name, transport, id=f"{name}-{transport}") for name in FRAMEWORKS for transport in TRANSPORTS]

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + DRIVER_TIMEOUT)


@pytest.mark.parametrize(("name", "transport"), ALL_CASES)
def test_every_framework_lists_both_tools_without_a_failed_step(
    reports: dict[str, dict[str, Any]], name: str, transport: str
) -> None:
    report = reports[name]
    assert not report["failures"], _failures(report)
    assert report["steps"][f"{transport}.tools"] == ["get_credit_usage", TOOL]


@pytest.mark.parametrize(("name", "transport", "provider"), PROVIDER_CASES)
def test_integer_arguments_reach_the_provider_as_integers(
    reports: dict[str, dict[str, Any]], name: str, transport: str, provider: str
) -> None:
    step = reports[name]["steps"].get(f"{transport}.{provider}")
    assert step, _failures(reports[name])
    declared = _declared(provider.removesuffix("_strict"), step["first"])["properties"]
    for argument in INTEGER_ARGUMENTS:
        types = _types(declared[argument])
        assert "integer" in types and "string" not in types, (argument, declared[argument])


@pytest.mark.parametrize(("name", "transport", "provider"), PROVIDER_CASES)
def test_the_next_provider_request_carries_the_whole_text_answer_and_no_unfetchable_url(
    reports: dict[str, dict[str, Any]], reference: dict[str, Any], name: str, transport: str, provider: str
) -> None:
    step = reports[name]["steps"].get(f"{transport}.{provider}")
    assert step, _failures(reports[name])
    body = step["request"]
    dumped = json.dumps(body)
    for fact in reference["facts"]:
        assert json.dumps(fact)[1:-1] in dumped, f"{fact!r} is not in the request after the result"
    assert "[invalid_input]" not in dumped
    links = [(key, value) for key, value in _strings(body) if value.startswith("keyapi://")]
    assert not links, f"the request hands the provider keyapi:// URLs to fetch: {links}"


@pytest.mark.parametrize(
    ("name", "transport", "provider"),
    [case for case in PROVIDER_CASES if case.values[2] != "openai_chat_strict"],
)
def test_an_error_result_reaches_the_model_as_the_servers_error_text(
    reports: dict[str, dict[str, Any]], name: str, transport: str, provider: str
) -> None:
    if name == "langchain":  # one error call for all providers, judged on the ToolMessage
        step = reports[name]["steps"][f"{transport}.error"]
        assert step["status"] == "error"
        assert step["content"][0]["text"].startswith("[invalid_input] ")
        return
    step = reports[name]["steps"].get(f"{transport}.{provider}.error")
    assert step, _failures(reports[name])
    texts = [value for _, value in _strings(step["request"]) if "[invalid_input]" in value]
    assert texts, "the server's error text is not in the request after the failed call"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_openai_agents_converts_every_tool_to_a_strict_schema(
    reports: dict[str, dict[str, Any]], transport: str
) -> None:
    for provider in ("openai_responses", "openai_chat"):
        body = reports["openai_agents"]["steps"][f"{transport}.{provider}"]["first"]
        tools = [tool.get("function", tool) for tool in body["tools"]]
        assert tools and all(tool["strict"] is True for tool in tools), tools


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_langchain_strict_binding_keeps_the_schema_strict(reports: dict[str, dict[str, Any]], transport: str) -> None:
    body = reports["langchain"]["steps"][f"{transport}.openai_chat_strict"]["first"]
    (tool,) = [t["function"] for t in body["tools"] if t["function"]["name"] == TOOL]
    assert tool["strict"] is True
    assert set(tool["parameters"]["required"]) == set(tool["parameters"]["properties"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_llama_index_openai_conversion_accepts_the_descriptions(
    reports: dict[str, dict[str, Any]], transport: str
) -> None:
    converted = reports["llama_index"]["steps"].get(f"{transport}.convert")
    assert converted, _failures(reports["llama_index"])
    assert sorted(t["function"]["name"] for t in converted) == ["get_credit_usage", TOOL]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_smolagents_keeps_the_whole_answer_without_dropping_content(
    reports: dict[str, dict[str, Any]], transport: str
) -> None:
    step = reports["smolagents"]["steps"][f"{transport}.openai_chat"]
    assert not [w for w in step["warnings"] if "multiple content" in w], step["warnings"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fastmcp_client_parses_the_result_and_raises_the_error_text(
    reports: dict[str, dict[str, Any]], transport: str
) -> None:
    steps = reports["fastmcp"]["steps"]
    call = steps[f"{transport}.call"]
    assert call["is_error"] is False and call["data_videos"] == 2
    assert [block["type"] for block in call["content"]] == ["text"]
    assert steps[f"{transport}.error"]["raised"] == "ToolError"
    assert steps[f"{transport}.error"]["text"].startswith("[invalid_input] ")
    for prompt in steps[f"{transport}.prompts"]:
        for argument in prompt["arguments"]:
            assert argument["description"], f"prompt {prompt['name']}: argument {argument['name']} has no description"


def test_each_lock_file_holds_its_pins() -> None:
    """The .in files name the frameworks' versions (docs/clients.md's matrix); the .txt locks must agree."""
    for framework in FRAMEWORKS.values():
        pins = re.findall(
            r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", framework.lock.with_suffix(".in").read_text(), re.M
        )
        locked = framework.lock.read_text()
        assert pins, framework.name
        for package, version in pins:
            assert re.search(rf"^{re.escape(package)}=={re.escape(version)}$", locked, re.M), (framework.name, package)
