# gunicorn in front of the mcpsync WSGI app: one gunicorn per instance, several behind
# HAProxy or nginx (haproxy.cfg / nginx.conf beside this file).
#
#   pip install 'mcpsync[redis]' gunicorn
#   MCPSYNC_BIND=127.0.0.1:8001 MCPSYNC_INSTANCE_ID=i1 MCPSYNC_STATE_URL=redis://127.0.0.1:6379/0 \
#   MCPSYNC_SECRET=... gunicorn -c deploy/gunicorn.conf.py
#
# Why one worker: gunicorn's workers share the listening socket and take connections in no
# particular order, so a handshake-era session (Mcp-Session-Id) created in one worker is
# unknown to the next ("Session not found"); nothing inside gunicorn can route it back. One
# worker per gunicorn, one gunicorn per instance, affinity at the balancer. With shared
# state a 2026-07-28 client works across workers too: MCPSYNC_WORKERS=N serves only those
# clients correctly. One mcpsync process uses about one core (the GIL): run as many
# instances as cores.
import os

bind = os.environ.get("MCPSYNC_BIND", "127.0.0.1:8001")
chdir = os.path.dirname(os.path.abspath(__file__))   # so "wsgi:app" is deploy/wsgi.py
wsgi_app = "wsgi:app"
workers = int(os.environ.get("MCPSYNC_WORKERS", "1"))
worker_class = "gthread"    # a tool call holds its thread; SSE replies use WSGI write()
threads = 64                # calls in flight per worker (mcpsync's own front end: 512)
keepalive = 75              # seconds an idle client connection stays open (> the balancer's)
graceful_timeout = 10       # SIGTERM: calls in flight may finish this long
timeout = 30                # a worker whose main loop stalls this long is restarted
