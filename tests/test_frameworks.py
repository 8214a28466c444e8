"""keyapi-mcp through the agent frameworks its users reach it from (docs/clients.md), each as its users run it.

Every framework gets its own virtual environment, built by uv from the pinned lock file in
tests/frameworks/requirements/ (never the test environment: most of them pin `mcp<2`, and keyapi-mcp runs as its
own process anyway). The environments are kept in the user's cache directory (`ENVS`), one directory per lock
file and interpreter (named by their hash), so a second run, from any clone on the machine, builds nothing;
the wheels come through the user's uv cache.

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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import platformdirs
import pytest
from helpers import TOOL, connect, http_server_process, in_ci, make_settings, text_of
from installs import REGISTRY_VARIABLES, uv_binary

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS_DIR = Path(__file__).resolve().parent / "frameworks"
REQUIREMENTS = FRAMEWORKS_DIR / "requirements"
# Outside the checkout, so that every clone and worktree on a machine (CI's fresh clone each run included)
# reuses the environments already built for the same lock file; KEYAPI_TEST_FRAMEWORK_ENVS moves them.
ENVS = Path(
    os.environ.get("KEYAPI_TEST_FRAMEWORK_ENVS") or platformdirs.user_cache_path("keyapi-mcp") / "test-frameworks"
)
BUILD_TIMEOUT = 900.0  # a cold uv cache downloads a few hundred MB of wheels
DRIVER_TIMEOUT = 300.0
REQUEST_ARGUMENTS = {"video_ids": ["9000000000000000001", "9000000000000000005"], "top": 2}  # fwcommon's choice


@dataclass(frozen=True)
class Framework:
    name: str  # the lock file and driver are requirements/<name>.txt and driver_<name>.py
    providers: tuple[str, ...]  # the provider request kinds the driver builds (fwcommon.provider_of)
    # What the framework hands the model: the text content, or (Pydantic AI, whenever every content item is
    # text) the structured result as JSON, which holds every product, not only the ones the text shows.
    carries: str = "text"

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
        Framework("pydantic_ai", ("openai_chat", "openai_responses", "anthropic", "gemini"), carries="structured"),
        Framework("llama_index", ("openai_chat",)),
        Framework("smolagents", ("openai_chat",)),
        Framework("fastmcp", ()),
    )
}
DOCS = REPO / "docs" / "clients.md"
DOC_TITLES = {
    "langchain": "LangChain",
    "openai_agents": "OpenAI Agents SDK",
    "pydantic_ai": "Pydantic AI",
    "llama_index": "LlamaIndex",
    "smolagents": "smolagents",
    "fastmcp": "FastMCP client",
}
DOC_VIDEO = "9000000000000000001"  # the video the examples ask about


def doc_example(title: str) -> str:
    match = re.search(
        rf"^### {re.escape(title)}\n\n```python\n(.*?)^```", DOCS.read_text(encoding="utf-8"), re.M | re.S
    )
    assert match, f"docs/clients.md has no example under ### {title}"
    return match.group(1)


TRANSPORTS = ("stdio", "http")
OUTCOMES = (pytest.skip.Exception, pytest.fail.Exception)


def _uv_env() -> dict[str, str]:
    """uv's environment: the registry settings, and the user's own uv cache (a machine that has built these
    environments once, a developer's or CI's, installs them again from the cache in seconds)."""
    passed = (*REGISTRY_VARIABLES, "PATH", "HOME", "XDG_CACHE_HOME", "UV_CACHE_DIR", "LOCALAPPDATA")
    env = {key: os.environ[key] for key in passed if key in os.environ}
    env.update({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1", "UV_NATIVE_TLS": "1"})
    return env


def framework_env(framework: Framework) -> Path:
    """The framework's environment (its python), built once per lock file and interpreter.

    Built under a temporary name and renamed when complete, so an interrupted build is never reused (only
    `bin/python` is run, which finds its environment relative to itself, so the rename is safe)."""
    interpreter = f"{sys.version}\n{os.path.realpath(sys.executable)}".encode()
    key = hashlib.sha256(framework.lock.read_bytes() + interpreter).hexdigest()[:16]
    venv = ENVS / f"{framework.name}-{key}"
    if venv.is_dir():
        return venv / "bin" / "python"
    for stale in ENVS.glob(f"{framework.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    ENVS.mkdir(parents=True, exist_ok=True)
    building = ENVS / f".building-{framework.name}-{key}-{os.getpid()}"
    python = building / "bin" / "python"
    for command in (
        [uv_binary(), "venv", "--quiet", "--python", sys.executable, str(building)],
        [uv_binary(), "pip", "sync", "--quiet", "--python", str(python), str(framework.lock)],
    ):
        done = subprocess.run(
            command,
            env=_uv_env(),
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            reason = f"cannot build the {framework.name} environment ({' '.join(command[1:3])}): {done.stderr[-2000:]}"
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
    try:
        building.rename(venv)
    except OSError:  # another test run built it meanwhile: use that one
        shutil.rmtree(building, ignore_errors=True)
        assert venv.is_dir(), f"could not move {building} to {venv}"
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
def pythons() -> dict[str, Path]:
    """Each framework's python, its environment built on first use."""

    class Pythons(dict[str, Path]):
        def __missing__(self, name: str) -> Path:
            self[name] = framework_env(FRAMEWORKS[name])
            return self[name]

    return Pythons()


@dataclass(frozen=True)
class Example:
    """docs/clients.md's example for one framework, as it ran: its output and the provider requests it made."""

    run: subprocess.CompletedProcess[str]
    requests: list[dict[str, Any]]


def _run_example(name: str, python: Path, workdir: Path) -> Example:
    """The example, verbatim, in its framework's environment: `keyapi-mcp` on PATH is this checkout's, and the
    provider SDK finds the stub through its usual environment variables (OPENAI_BASE_URL)."""
    from frameworks.fwcommon import DUMMY_KEY, ProviderStub, as_declared

    script = workdir / "example.py"
    script.write_text(doc_example(DOC_TITLES[name]), encoding="utf-8")
    (workdir / "home").mkdir()
    with ProviderStub() as stub:
        steps: list[Any] = [(TOOL, as_declared({"video_ids": [DOC_VIDEO]}))]
        if name == "smolagents":  # its agents end only through their final_answer tool
            steps.append(("final_answer", {"answer": "done"}))
        for provider in ("openai_chat", "openai_responses"):
            stub.script(provider, *steps)
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(workdir / "home"),
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": f"{stub.url}/v1",
            "OPENAI_API_BASE": f"{stub.url}/v1",  # llama-index's OpenAI reads this name instead
            "OPENAI_AGENTS_DISABLE_TRACING": "1",  # its default exporter would send the trace to the provider
        }
        run = subprocess.run(
            [str(python), str(script)],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Example(run, [body for bodies in stub.requests.values() for body in bodies])


@dataclass
class Runs:
    """Every framework's driver report and docs example, produced together on first use: every environment
    is built (one at a time: uv already installs in parallel), then all drivers and examples run at once (they
    mostly wait on imports and processes, so together they take about as long as the slowest few)."""

    pythons: dict[str, Path]
    request: str
    home: Path
    workdirs: Path
    outcomes: dict[tuple[str, str], Callable[[], Any]]

    def _python(self, name: str) -> Path | BaseException:
        try:
            return self.pythons[name]
        except OUTCOMES as exc:  # an environment that cannot be built: its tests skip or fail with the reason
            return exc

    def _drive(self, name: str) -> dict[str, Any]:
        python = self._python(name)
        if isinstance(python, BaseException):
            raise python
        run = subprocess.run(
            [str(python), str(FRAMEWORKS[name].driver), self.request],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.home)},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert run.returncode == 0, f"the {name} driver failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
        return {**json.loads(run.stdout.strip().splitlines()[-1]), "stderr": run.stderr}

    def _example(self, name: str) -> Example:
        python = self._python(name)
        if isinstance(python, BaseException):
            raise python
        workdir = self.workdirs / name
        workdir.mkdir()
        return _run_example(name, python, workdir)

    def _start(self) -> None:
        for framework in FRAMEWORKS:
            self._python(framework)
        jobs = [(kind, name) for kind in ("report", "example") for name in FRAMEWORKS]
        work = {"report": self._drive, "example": self._example}

        def outcome(job: tuple[str, str]) -> Callable[[], Any]:
            try:
                value = work[job[0]](job[1])
            except BaseException as exc:  # reported by the tests that need it, not by the first one to ask
                failure = exc

                def reraise() -> Any:
                    raise failure

                return reraise
            return lambda: value

        with ThreadPoolExecutor(max_workers=6) as pool:
            self.outcomes.update(zip(jobs, pool.map(outcome, jobs), strict=True))

    def get(self, kind: str, name: str) -> Any:
        if not self.outcomes:
            self._start()
        return self.outcomes[kind, name]()


@pytest.fixture(scope="module")
def runs(
    pythons: dict[str, Path], demo_server: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    url, env = demo_server
    request = json.dumps(
        {"command": str(Path(sys.executable).parent / "keyapi-mcp"), "args": ["--demo"], "env": env, "http_url": url}
    )
    home, workdirs = tmp_path_factory.mktemp("frameworks-home"), tmp_path_factory.mktemp("frameworks-examples")
    return Runs(pythons, request, home, workdirs, {})


@pytest.fixture(scope="module")
def reports(runs: Runs) -> dict[str, dict[str, Any]]:
    """Each framework's driver report."""

    class Reports(dict[str, dict[str, Any]]):
        def __missing__(self, name: str) -> dict[str, Any]:
            self[name] = runs.get("report", name)
            return self[name]

    return Reports()


def facts(arguments: dict[str, Any], state_dir: Path) -> dict[str, list[str]]:
    """What the server answers to a call, read through the SDK's own client: the facts the next provider
    request must carry. In the text: its summary and product lines (the video lines say whether they came
    from the cache); in the structured result: every product's id, units and GMV."""

    async def answer() -> tuple[str, dict[str, Any]]:
        async with connect(make_settings(state_dir=state_dir), demo=True) as client:
            result = await client.call_tool(TOOL, arguments)
            return text_of(result), result.structured_content or {}

    text, structured = anyio.run(answer)
    lines = text.splitlines()
    products = [p for video in structured["videos"] for p in video["products"]]
    return {
        "text": [lines[1], *(line for line in lines if line.startswith("- "))],
        "structured": [f"{p[k]}" for p in products for k in ("product_id", "units_sold", "gmv")],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return facts(REQUEST_ARGUMENTS, tmp_path_factory.mktemp("frameworks-reference"))


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
    from frameworks.fwcommon import declared_schema

    return declared_schema(provider, body)


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
def test_every_framework_lists_every_tool_without_a_failed_step(
    reports: dict[str, dict[str, Any]], listed: dict[str, dict[str, Any]], name: str, transport: str
) -> None:
    report = reports[name]
    assert not report["failures"], _failures(report)
    assert report["steps"][f"{transport}.tools"] == sorted(listed)


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each tool's input schema, as the server lists it (the tools a framework must list and convert)."""

    async def tools() -> dict[str, dict[str, Any]]:
        settings = make_settings(state_dir=tmp_path_factory.mktemp("frameworks-schema"))
        async with connect(settings, demo=True) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    return anyio.run(tools)


@pytest.fixture(scope="module")
def argument_types(listed: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each get_video_products argument's JSON type, as the server lists it."""
    return {name: schema["type"] for name, schema in listed[TOOL]["properties"].items()}


@pytest.mark.parametrize(("name", "transport", "provider"), PROVIDER_CASES)
def test_every_argument_reaches_the_provider_with_its_type(
    reports: dict[str, dict[str, Any]], argument_types: dict[str, str], name: str, transport: str, provider: str
) -> None:
    """The conversion changes no type (a STRING `top` makes the model send "3"); strict conversions may add
    null, nothing else."""
    step = reports[name]["steps"].get(f"{transport}.{provider}")
    assert step, _failures(reports[name])
    declared = _declared(provider.removesuffix("_strict"), step["first"])["properties"]
    assert set(declared) == set(argument_types)
    for argument, kind in argument_types.items():
        assert _types(declared[argument]) - {"null"} == {kind}, (argument, declared[argument])


@pytest.mark.parametrize(("name", "transport", "provider"), PROVIDER_CASES)
def test_the_next_provider_request_carries_the_whole_answer_and_no_unfetchable_url(
    reports: dict[str, dict[str, Any]], reference: dict[str, list[str]], name: str, transport: str, provider: str
) -> None:
    step = reports[name]["steps"].get(f"{transport}.{provider}")
    assert step, _failures(reports[name])
    body = step["request"]
    dumped = json.dumps(body)
    for fact in reference[FRAMEWORKS[name].carries]:
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
    reports: dict[str, dict[str, Any]], listed: dict[str, dict[str, Any]], transport: str
) -> None:
    converted = reports["llama_index"]["steps"].get(f"{transport}.convert")
    assert converted, _failures(reports["llama_index"])
    assert sorted(t["function"]["name"] for t in converted) == sorted(listed)


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


def _pins(framework: Framework) -> list[tuple[str, str]]:
    text = framework.lock.with_suffix(".in").read_text(encoding="utf-8")
    return re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", text, re.M)


def test_each_lock_file_holds_its_pins() -> None:
    """The .in files name the frameworks' versions (docs/clients.md's matrix); the .txt locks must agree."""
    for framework in FRAMEWORKS.values():
        pins = _pins(framework)
        locked = framework.lock.read_text()
        assert pins, framework.name
        for package, version in pins:
            assert re.search(rf"^{re.escape(package)}=={re.escape(version)}$", locked, re.M), (framework.name, package)


# --------------------------------------------------------------------------------------------------------------
# docs/clients.md's examples, run as shown


def test_the_docs_matrix_names_exactly_the_pinned_versions() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for framework in FRAMEWORKS.values():
        for package, version in _pins(framework):
            assert f"`{package}=={version}`" in docs, (framework.name, package, version)


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_the_docs_example_runs_as_shown(runs: Runs, name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    example: Example = runs.get("example", name)
    run = example.run
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    expected = facts({"video_ids": [DOC_VIDEO]}, tmp_path_factory.mktemp("docs-reference"))
    if name == "fastmcp":
        assert all(fact in run.stdout for fact in expected["text"]), run.stdout
        return
    assert run.stdout.strip().splitlines()[-1] == "done", run.stdout
    dumped = json.dumps(example.requests[-1] if name != "smolagents" else example.requests)
    for fact in expected[FRAMEWORKS[name].carries]:
        assert json.dumps(fact)[1:-1] in dumped, f"{fact!r} is not in the request after the result"
