"""Pydantic AI: an Agent with keyapi-mcp as an `MCPToolset`, on OpenAI (Chat Completions and Responses),
Anthropic and Google models; the agent's own loop calls the tool and sends the result in its next request."""

from __future__ import annotations

from typing import Any

from fastmcp.client.transports import StdioTransport
from fwcommon import BAD_ID, DUMMY_KEY, TOOL, ProviderStub, Report, Request, as_declared, call_arguments, drive
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.google import GoogleModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.google import GoogleProvider
from pydantic_ai.providers.openai import OpenAIProvider


def models(stub: ProviderStub) -> dict[str, Any]:
    openai = OpenAIProvider(base_url=f"{stub.url}/v1", api_key=DUMMY_KEY)
    return {
        "openai_chat": OpenAIChatModel("gpt-4o-mini", provider=openai),
        "openai_responses": OpenAIResponsesModel("gpt-4o-mini", provider=openai),
        "anthropic": AnthropicModel(
            "claude-sonnet-5-5", provider=AnthropicProvider(api_key=DUMMY_KEY, base_url=stub.url)
        ),
        "gemini": GoogleModel("gemini-3.5-flash-lite", provider=GoogleProvider(api_key=DUMMY_KEY, base_url=stub.url)),
    }


def toolset_for(request: Request, transport: str) -> MCPToolset[Any]:
    if transport == "stdio":
        return MCPToolset(StdioTransport(command=request.command, args=request.args, env=request.env))
    assert request.http_url
    return MCPToolset(request.http_url)


async def run(request: Request, transport: str, report: Report, stub: ProviderStub) -> None:
    toolset = toolset_for(request, transport)
    async with toolset:
        listed = await toolset.client.list_tools()
        report.steps[f"{transport}.tools"] = sorted(t.name for t in listed)
        description = next(t.description or "" for t in listed if t.name == TOOL)
        for provider, model in models(stub).items():
            agent = Agent(model, toolsets=[toolset], instructions="Answer from the tool results.")
            for case, arguments in (("", call_arguments(description)), (".error", {"video_ids": [BAD_ID]})):

                async def next_request(
                    provider: str = provider, agent: Agent = agent, arguments: Any = arguments
                ) -> Any:
                    stub.script(provider, (TOOL, as_declared(arguments)))
                    result = await agent.run("Which products sell in these videos?")
                    assert result.output == "done", result.output
                    return {"first": stub.requests[provider][0], "request": stub.last(provider)}

                await report.step(f"{transport}.{provider}{case}", next_request)


if __name__ == "__main__":
    drive("pydantic-ai", run)
