"""smolagents: `MCPClient` tools (mcpadapt) in a `ToolCallingAgent` on an OpenAI-compatible model. smolagents
keeps only the first content item of a result (and warns when there are more), so the first must be the whole
text answer."""

from __future__ import annotations

import logging
from typing import Any

from fwcommon import BAD_ID, DUMMY_KEY, TOOL, ProviderStub, Report, Request, as_declared, call_arguments, drive
from mcp import StdioServerParameters
from smolagents import MCPClient, OpenAIModel, ToolCallingAgent


class Warnings(logging.Handler):
    """mcpadapt's warnings (such as "returned multiple content, using the first one"), for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def run(request: Request, transport: str, report: Report, stub: ProviderStub) -> None:
    if transport == "stdio":
        params: Any = StdioServerParameters(command=request.command, args=request.args, env=request.env)
    else:
        params = {"url": request.http_url, "transport": "streamable-http"}
    warnings = Warnings()
    logging.getLogger("mcpadapt").addHandler(warnings)
    with MCPClient(params, structured_output=False) as tools:
        report.steps[f"{transport}.tools"] = sorted(t.name for t in tools)
        description = next(t.description for t in tools if t.name == TOOL)
        model = OpenAIModel(model_id="gpt-4o-mini", api_base=f"{stub.url}/v1", api_key=DUMMY_KEY)
        agent = ToolCallingAgent(tools=tools, model=model, max_steps=3, verbosity_level=0)
        for case, arguments in (("", call_arguments(description)), (".error", {"video_ids": [BAD_ID]})):

            async def next_request(arguments: Any = arguments) -> Any:
                done = ("final_answer", {"answer": "done"})
                stub.script("openai_chat", (TOOL, as_declared(arguments)), done)
                warnings.messages.clear()
                answer = agent.run("Which products sell in these videos?")
                assert answer == "done", answer
                return {
                    "first": stub.requests["openai_chat"][0],
                    "request": stub.last("openai_chat"),
                    "warnings": list(warnings.messages),
                }

            await report.step(f"{transport}.openai_chat{case}", next_request)


if __name__ == "__main__":
    drive("smolagents", run)
