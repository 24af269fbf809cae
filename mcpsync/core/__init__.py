"""The server core, below every transport: the registry of what a server offers, one
client's protocol state (``connection``) and a request's ``context``, the method handlers,
broadcasts to live sessions and listen streams, and calls into user code."""
