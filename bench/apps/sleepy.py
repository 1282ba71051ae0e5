"""A WSGI app whose every request takes 10 ms (a sleep), for the overload scenario:
2 workers serve at most 200 requests per second, whatever the load."""

import time

BODY = b"slept 10 ms\n"


def application(environ, start_response):
    """Sleep 10 ms, then answer a short plain-text body."""
    time.sleep(0.010)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
