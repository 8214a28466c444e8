# keyapi-mcp as an HTTP service (MCP Streamable HTTP at /mcp, liveness at /healthz). See docs/docker.md.
#
#   docker build -t keyapi-mcp .
#   docker run --rm -p 127.0.0.1:8000:8000 -e KEYAPI_API_KEY -e KEYAPI_MCP_AUTH_TOKEN keyapi-mcp
#
# The server refuses to listen on 0.0.0.0 without KEYAPI_MCP_AUTH_TOKEN (exit status 2), so the token is
# required at run time and never baked into the image.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
# uv builds the wheel from this checkout and installs it, with the Redis client for shared state, into a
# virtual environment that the runtime stage copies as a whole.
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY keyapi_mcp ./keyapi_mcp
RUN uv build --wheel --out-dir /dist \
    && uv venv /opt/keyapi-mcp \
    && uv pip install --no-cache --python /opt/keyapi-mcp/bin/python "$(ls /dist/keyapi_mcp-*.whl)[redis]"

FROM python:${PYTHON_VERSION}-slim
LABEL io.modelcontextprotocol.server.name="io.github.keyapi/keyapi-mcp" \
      org.opencontainers.image.title="keyapi-mcp" \
      org.opencontainers.image.description="MCP server for KeyAPI's TikTok Video Products (Analytics) endpoint" \
      org.opencontainers.image.source="https://github.com/keyapi/keyapi-mcp" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 keyapi \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/keyapi keyapi
COPY --from=build /opt/keyapi-mcp /opt/keyapi-mcp
ENV PATH="/opt/keyapi-mcp/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    KEYAPI_STATE_DIR=/home/keyapi/state
USER 10001:10001
WORKDIR /home/keyapi
EXPOSE 8000
# The slim image has no curl: probe with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["keyapi-mcp"]
CMD ["--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
