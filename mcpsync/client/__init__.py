"""mcpsync as an MCP *client*: ``ClientSession`` (one session with one server over any
transport: ``channels/``), used by the hub for its upstreams."""
