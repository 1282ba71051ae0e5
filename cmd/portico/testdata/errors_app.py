"""Test app for the error log tests (errorlog_test.go)."""
import os
import sys
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise ValueError("boom from the app")
    if path == "/after":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"partial "
            raise KeyError("raised after the headers")

        return body()
    if path == "/late":
        # Past the relay's buffer: the head leaves before the error.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def big():
            yield b"x" * (1 << 20)
            raise KeyError("raised after the response started")

        return big()
    if path == "/excinfo":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial ")
        try:
            raise RuntimeError("reported with exc_info")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"unreachable"]
    if path == "/crash":
        os._exit(7)
    if path == "/sleep":
        time.sleep(60)
    if path == "/stuck":
        # Swallows the interrupt: its worker must be killed.
        while True:
            try:
                time.sleep(60)
            except BaseException:
                pass
    body = ("%s %s" % (os.getpid(), environ.get("HTTP_X_REQUEST_ID", "-"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
