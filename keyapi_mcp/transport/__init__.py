"""The transports: Streamable HTTP (guards, the static token, OAuth) and the stdio end-of-input drain."""
