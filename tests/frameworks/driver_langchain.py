"""LangChain: langchain-mcp-adapters' tools on ChatOpenAI (Chat Completions and Responses), ChatAnthropic and
ChatGoogleGenerativeAI, each converting the tools and carrying the result into its next request.

The same code as docs/clients.md's LangChain section, with the provider pointed at the local stub.
"""

from __future__ import annotations

from typing import Any

from fwcommon import BAD_ID, DUMMY_KEY, TOOL, ProviderStub, Report, Request, as_declared, call_arguments, drive
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from langchain_openai import ChatOpenAI

QUESTION = "Which products sell in these videos?"


def models(stub: ProviderStub) -> dict[str, Any]:
    return {
        "openai_chat": ChatOpenAI(model="gpt-4o-mini", api_key=DUMMY_KEY, base_url=f"{stub.url}/v1", max_retries=0),
        "openai_chat_strict": ChatOpenAI(
            model="gpt-4o-mini", api_key=DUMMY_KEY, base_url=f"{stub.url}/v1", max_retries=0
        ),
        "openai_responses": ChatOpenAI(
            model="gpt-4o-mini",
            api_key=DUMMY_KEY,
            base_url=f"{stub.url}/v1",
            use_responses_api=True,
            max_retries=0,
        ),
        "anthropic": ChatAnthropic(
            model="claude-sonnet-5-5", api_key=DUMMY_KEY, base_url=stub.url, max_retries=0, max_tokens=1024
        ),
        "gemini": ChatGoogleGenerativeAI(
            model="gemini-3.5-flash-lite", google_api_key=DUMMY_KEY, base_url=stub.url, max_retries=0
        ),
    }


def message_json(message: ToolMessage) -> dict[str, Any]:
    return {"content": message.content, "status": message.status, "artifact": message.artifact is not None}


async def run(request: Request, transport: str, report: Report, stub: ProviderStub) -> None:
    if transport == "stdio":
        connection: dict[str, Any] = {
            "transport": "stdio",
            "command": request.command,
            "args": request.args,
            "env": request.env,
        }
    else:
        connection = {"transport": "streamable_http", "url": request.http_url}
    client = MultiServerMCPClient({"keyapi": connection})
    # One session for the whole run: without it, every tool call starts (and over stdio spawns) a new one.
    async with client.session("keyapi") as session:
        await run_session(await load_mcp_tools(session), transport, report, stub)


async def run_session(tools: list[Any], transport: str, report: Report, stub: ProviderStub) -> None:
    tool = next(t for t in tools if t.name == TOOL)
    report.steps[f"{transport}.tools"] = sorted(t.name for t in tools)

    arguments = call_arguments(tool.description)

    for name, model in models(stub).items():
        provider, strict = name.removesuffix("_strict"), name.endswith("_strict")

        async def next_request(provider: str = provider, model: Any = model, strict: bool = strict) -> Any:
            stub.script(provider, (TOOL, as_declared(arguments)))
            bound = model.bind_tools(tools, strict=True) if strict else model.bind_tools(tools)
            messages: list[Any] = [HumanMessage(QUESTION)]
            ai = await bound.ainvoke(messages)
            assert ai.tool_calls, f"the stubbed {provider} model's tool call did not reach LangChain"
            result = await tool.ainvoke(ai.tool_calls[0])
            await bound.ainvoke([*messages, ai, result])
            first, last = stub.requests[provider][0], stub.last(provider)
            return {"result": message_json(result), "first": first, "request": last}

        await report.step(f"{transport}.{name}", next_request)

    async def error_result() -> Any:
        call = {"type": "tool_call", "id": "call_bad", "name": TOOL, "args": {"video_ids": [BAD_ID]}}
        return message_json(await tool.ainvoke(call))

    await report.step(f"{transport}.error", error_result)


if __name__ == "__main__":
    drive("langchain", run)
