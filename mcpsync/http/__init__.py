"""The HTTP side: ``HttpApp`` (a WSGI application) and its endpoints."""
