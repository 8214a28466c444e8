"""LlamaIndex: llama-index-tools-mcp's `McpToolSpec` tools in a `FunctionAgent` on llama-index's OpenAI LLM, whose
tool conversion (`ToolMetadata.to_openai_tool`) refuses descriptions over 1,024 characters."""

from __future__ import annotations

from typing import Any

from fwcommon import BAD_ID, DUMMY_KEY, TOOL, ProviderStub, Report, Request, as_declared, call_arguments, drive
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.llms.openai import OpenAI
from llama_index.tools.mcp import BasicMCPClient, McpToolSpec


async def run(request: Request, transport: str, report: Report, stub: ProviderStub) -> None:
    if transport == "stdio":
        client = BasicMCPClient(request.command, args=request.args, env=request.env)
    else:
        assert request.http_url
        client = BasicMCPClient(request.http_url)
    tools = await McpToolSpec(client=client).to_tool_list_async()
    report.steps[f"{transport}.tools"] = sorted(t.metadata.name for t in tools)
    description = next(t.metadata.description for t in tools if t.metadata.name == TOOL)

    async def convert() -> Any:
        return [tool.metadata.to_openai_tool() for tool in tools]

    await report.step(f"{transport}.convert", convert)
    llm = OpenAI(model="gpt-4o-mini", api_key=DUMMY_KEY, api_base=f"{stub.url}/v1", max_retries=0)
    agent = FunctionAgent(tools=tools, llm=llm, system_prompt="Answer from the tool results.")
    for case, arguments in (("", call_arguments(description)), (".error", {"video_ids": [BAD_ID]})):

        async def next_request(arguments: Any = arguments) -> Any:
            stub.script("openai_chat", (TOOL, as_declared(arguments)))
            result = await agent.run("Which products sell in these videos?")
            assert str(result) == "done", str(result)
            return {"first": stub.requests["openai_chat"][0], "request": stub.last("openai_chat")}

        await report.step(f"{transport}.openai_chat{case}", next_request)


if __name__ == "__main__":
    drive("llama-index", run)
