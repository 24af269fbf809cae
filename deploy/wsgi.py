"""The WSGI application gunicorn serves (see gunicorn.conf.py beside this file).

MCPSYNC_TARGET names your server as ``package.module:attr`` or ``path/to/file.py[:attr]``
(default: the bundled example). Shared state comes from MCPSYNC_STATE_URL, MCPSYNC_SECRET
(or MCPSYNC_SECRET_FILE) and MCPSYNC_INSTANCE_ID, as for ``python -m mcpsync``;
MCPSYNC_ALLOW_HOSTS lists the public host names clients use (comma-separated) beside the
loopback ones.
"""
from __future__ import annotations

import os

from mcpsync import build_wsgi_app
from mcpsync.state import SharedState
from mcpsync.target import load_target

LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")

server = load_target(os.environ.get("MCPSYNC_TARGET", "mcpsync.examples.everything:server"))
hosts = [h.strip().lower() for h in os.environ.get("MCPSYNC_ALLOW_HOSTS", "").split(",") if h.strip()]
app = build_wsgi_app(server, state=SharedState.from_environ(), allowed_hosts=[*LOOPBACK, *hosts])
