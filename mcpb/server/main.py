"""The MCP Bundle's entry point: the host runs this file with uv inside the unpacked bundle.

A separate launcher rather than `keyapi_mcp/__main__.py`: a script's own directory goes first on
`sys.path`, and inside `keyapi_mcp/` the module `http.py` would shadow the standard library's `http`.
"""

import sys

from keyapi_mcp.__main__ import main

sys.exit(main())
