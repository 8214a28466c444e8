"""OpenAI Agents SDK: an Agent with keyapi-mcp as an MCP server, strict schemas, on the Responses and the Chat
Completions models; the Runner's own loop calls the tool and sends the result in its next request."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, set_tracing_disabled
from agents.mcp import MCPServer, MCPServerStdio, MCPServerStreamableHttp
from fwcommon import BAD_ID, DUMMY_KEY, TOOL, ProviderStub, Report, Request, as_declared, call_arguments
from openai import AsyncOpenAI


def server_for(request: Request, transport: str) -> MCPServer:
    if transport == "stdio":
        return MCPServerStdio(
            {"command": request.command, "args": request.args, "env": request.env},
            cache_tools_list=True,
            client_session_timeout_seconds=30,
        )
    assert request.http_url
    return MCPServerStreamableHttp({"url": request.http_url}, cache_tools_list=True, client_session_timeout_seconds=30)


async def run(request: Request, transport: str, report: Report, stub: ProviderStub) -> None:
    openai = AsyncOpenAI(api_key=DUMMY_KEY, base_url=f"{stub.url}/v1", max_retries=0)
    models = {
        "openai_responses": OpenAIResponsesModel(model="gpt-4o-mini", openai_client=openai),
        "openai_chat": OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=openai),
    }
    async with server_for(request, transport) as server:
        listed = await server.list_tools()
        report.steps[f"{transport}.tools"] = sorted(t.name for t in listed)
        description = next(t.description or "" for t in listed if t.name == TOOL)
        for provider, model in models.items():
            agent = Agent(
                name="analyst",
                instructions="Answer from the tool results.",
                mcp_servers=[server],
                mcp_config={"convert_schemas_to_strict": True},
                model=model,
            )
            for case, arguments in (("", call_arguments(description)), (".error", {"video_ids": [BAD_ID]})):

                async def next_request(
                    provider: str = provider, agent: Agent = agent, arguments: Any = arguments
                ) -> Any:
                    stub.script(provider, (TOOL, as_declared(arguments)))
                    result = await Runner.run(agent, "Which products sell in these videos?", max_turns=3)
                    assert result.final_output == "done", result.final_output
                    return {"first": stub.requests[provider][0], "request": stub.last(provider)}

                await report.step(f"{transport}.{provider}{case}", next_request)


async def main() -> None:
    set_tracing_disabled(True)  # the default exporter would send traces to the provider
    request = Request.from_argv()
    report = Report("openai-agents")
    with ProviderStub() as stub:
        for transport in request.transports:
            await report.step(f"{transport}.session", lambda t=transport: run(request, t, report, stub))
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
