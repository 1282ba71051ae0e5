"""Test app for the response-shaping tests (shape_test.go): error pages,
the cache and compression."""
import os
import sys
import time
from urllib.parse import parse_qs

CALLS = {}  # path -> calls in this process


def count(environ):
    """Appends the request to $SHAPE_CALLS (one line per call to the app,
    across processes) and returns this process's count for the path."""
    path = environ["PATH_INFO"]
    CALLS[path] = CALLS.get(path, 0) + 1
    log = os.environ.get("SHAPE_CALLS")
    if log:
        with open(log, "a") as f:
            f.write("%s %s\n" % (path, environ.get("QUERY_STRING", "")))
    return CALLS[path]


def wait_for(path):
    for _ in range(3000):  # 30 s at most
        if os.path.exists(path):
            return
        time.sleep(0.01)


def application(environ, start_response):
    down = os.environ.get("SHAPE_DOWN")
    if down and os.path.exists(down):
        os._exit(3)  # the app is down: every request crashes its worker
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path.startswith("/status/"):
        code = int(path[len("/status/"):])
        body = ("app says %d" % code).encode()
        start_response("%d Whatever" % code, [("Content-Type", "text/plain"), ("X-From-App", "yes")])
        return [body]
    if path == "/sleep":
        sys.stderr.write("sleeping now\n")
        sys.stderr.flush()
        time.sleep(60)
    if path == "/cached":
        # Cache-Control from ?cc=, a body that says which call made it.
        n = count(environ)
        body = ("call %d of %s pid %d %s" % (n, path, os.getpid(), q.get("tag", ""))).encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        if "cc" in q:
            headers.append(("Cache-Control", q["cc"]))
        if "etag" in q:
            headers.append(("ETag", q["etag"]))
            if environ.get("HTTP_IF_NONE_MATCH") == q["etag"]:
                start_response("304 Not Modified", headers[2:])
                return [b""]
        if "vary" in q:
            headers.append(("Vary", q["vary"]))
        if "cookie" in q:
            headers.append(("Set-Cookie", "c=%s" % q["cookie"]))
        start_response("200 OK", headers)
        return [body]
    if path == "/block":
        # Counts, then holds the answer until ?until= exists.
        count(environ)
        wait_for(q["until"])
        body = b"released " + q.get("tag", "").encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [body]
    if path == "/page":
        # A compressible HTML page, ~40 kB.
        rows = "".join("<tr><td>row %d</td><td>some text that repeats</td></tr>\n" % i for i in range(800))
        body = ("<html><body><table>%s</table></body></html>" % rows).encode()
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        if "etag" in q:
            headers.append(("ETag", q["etag"]))
        start_response("200 OK", headers)
        return [body]
    if path == "/stream":
        # The first chunk, flushed; the second once ?until= exists.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first chunk " * 200
            wait_for(q["until"])
            yield b"second chunk " * 200

        return gen()
    body = ("%s %s" % (os.getpid(), path)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
