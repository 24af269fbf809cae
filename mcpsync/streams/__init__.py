"""Message-stream transports: one connection carries whole JSON-RPC messages both ways
(stdio, WebSocket); ``stream.MessageStream`` is what they share."""
