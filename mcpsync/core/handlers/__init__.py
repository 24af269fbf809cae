"""The method handlers of a server, one module per method family; ``Server`` wires them
into its method table (``protocol.dispatch.Dispatcher``)."""
