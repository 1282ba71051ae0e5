"""Test application for Portico's worker tests.

`application` is wrapped in wsgiref.validate.validator, with its warnings
turned into errors: any PEP 3333 slip by the server shows up as a 500.
`raw` is the same app unwrapped, for the cases the validator itself forbids
(exceptions after the response started, hangs that ignore interrupts).
"""

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

MARKS = os.environ.get("PORTICO_TEST_MARKS", tempfile.gettempdir())


def mark(name, line=None):
    """Appends line (default: the worker's pid) to the file name in MARKS."""
    with open(os.path.join(MARKS, name), "a") as f:
        f.write("%s\n" % (os.getpid() if line is None else line))


def entered(environ):
    """?enter=NAME marks NAME as soon as the request is in the app (the line
    is ?i= when given): tests wait for it instead of sleeping."""
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if "enter" in qs:
        mark(qs["enter"][0], qs.get("i", [None])[0])


def wait_for_mark(name, limit=30.0):
    """Returns once the test created the file name in MARKS (False after
    limit seconds: a test that forgot it fails instead of hanging)."""
    deadline = time.time() + limit
    while not os.path.exists(os.path.join(MARKS, name)):
        if time.time() > deadline:
            return False
        time.sleep(0.002)
    return True


def text(start_response, body, status="200 OK", ctype="text/plain"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def as_json(start_response, obj, status="200 OK"):
    return text(start_response, json.dumps(obj, sort_keys=True), status, "application/json")


class Closing(object):
    def __init__(self, chunks, name):
        self.chunks = chunks
        self.name = name

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        mark(self.name)


def app(environ, start_response):
    entered(environ)
    return route(environ, start_response)


def route(environ, start_response):
    path = environ["PATH_INFO"]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    arg = lambda k, d=None: qs.get(k, [d])[0]

    if path == "/env" or path.startswith("/env/"):
        out = {}
        for k, v in environ.items():
            if isinstance(v, str):
                out[k] = v
            else:
                out[k] = "<%s>" % type(v).__name__
        out["wsgi.version"] = list(environ["wsgi.version"])
        out["wsgi.multithread"] = environ["wsgi.multithread"]
        out["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        out["wsgi.run_once"] = environ["wsgi.run_once"]
        out["pid"] = os.getpid()
        return as_json(start_response, out)

    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        n = 0
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            n += len(chunk)
            h.update(chunk)
        return as_json(start_response, {"length": length, "read": n, "sha256": h.hexdigest(), "extra": inp.read(10).decode()})

    if path == "/lines":
        inp = environ["wsgi.input"]
        first = inp.readline()
        limited = inp.readline(3)
        rest_lines = inp.readlines()
        return as_json(start_response, {"first": first.decode(), "limited": limited.decode(), "rest": [l.decode() for l in rest_lines]})

    if path == "/iterate":
        lines = [l.decode() for l in environ["wsgi.input"]]
        return as_json(start_response, {"lines": lines})

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from write; ")
        return [b"from iterable"]

    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"a", b"b"], arg("name", "closed"))

    if path == "/generator":
        n = int(arg("n", "3"))
        delay = float(arg("delay", "0"))

        def gen():
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield ("chunk %d\n" % i).encode()

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/big":
        size = int(arg("size", "1048576"))
        block = b"0123456789abcdef" * 4096
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])

        def gen():
            left = size
            while left > 0:
                yield block[: min(left, len(block))]
                left -= min(left, len(block))

        return gen()

    if path == "/file":
        size = int(arg("size", "100000"))
        f = tempfile.TemporaryFile()
        f.write(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        f.seek(int(arg("skip", "0")))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)

    if path == "/error-before":
        raise ValueError("boom before start_response")

    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("changed my mind")
        except RuntimeError:
            return text(lambda s, h: start_response(s, h, sys.exc_info()), "custom error page", "500 Internal Server Error")

    if path == "/status":
        return text(start_response, "teapot", "418 I'm a teapot")

    if path == "/headers":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-One", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Length", "2")])
        return [b"ok"]

    if path == "/sleep":
        secs = float(arg("s", "1"))
        try:
            time.sleep(secs)
        finally:
            mark(arg("name", "slept"))
        return text(start_response, "woke")

    if path == "/wait":
        # Holds the slot until the test creates the mark ?go= names.
        if not wait_for_mark(arg("go", "go")):
            return text(start_response, "never told to go", "500 Internal Server Error")
        return text(start_response, "went")

    if path == "/spin":
        end = time.time() + float(arg("s", "10"))
        try:
            while time.time() < end:
                pass
        finally:
            mark(arg("name", "spun"))
        return text(start_response, "spun")

    if path == "/accel":
        start_response("200 OK", [("Content-Type", "application/pdf"), ("X-Accel-Redirect", arg("to", "/")), ("X-Other", "kept")])
        return [b"body the server must drop"]

    if path == "/sendfile":
        start_response("200 OK", [("Content-Type", "text/x-sent"), ("X-Sendfile", arg("path", "/"))])
        return [b"body the server must drop"]

    if path == "/osenv":
        return text(start_response, os.environ.get(arg("k", ""), "<unset>"))

    if path == "/threads":
        return as_json(start_response, {"thread": threading.current_thread().name, "pid": os.getpid()})

    if path == "/stderr":
        environ["wsgi.errors"].write("hello from wsgi.errors\n")
        environ["wsgi.errors"].flush()
        return text(start_response, "logged")

    if path == "/memory":
        global HOG
        HOG = bytearray(int(arg("mb", "100")) << 20)
        for i in range(0, len(HOG), 4096):
            HOG[i] = 1
        return as_json(start_response, {"pid": os.getpid()})

    return text(start_response, "not found: " + path, "404 Not Found")


application = validator(app)


def raw(environ, start_response):
    entered(environ)
    path = environ["PATH_INFO"]
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/crash":
        # Exits after ?s= seconds, or once the test creates the mark ?go=.
        if "go" in qs:
            wait_for_mark(qs["go"][0])
        time.sleep(float(qs.get("s", ["0"])[0]))
        os._exit(7)
    if path == "/error-after":

        def gen():
            yield b"partial"
            raise ValueError("boom after the response started")

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/error-later":
        # Fails after the response started and after a pause, so that the
        # server is already relaying it as a stream; the body is not read.

        def gen():
            yield b"partial"
            time.sleep(0.2)
            raise ValueError("boom while streaming")

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/hang":
        # Ignores the interrupt: the worker must be killed.
        while True:
            try:
                time.sleep(100)
            except BaseException:
                mark("hang-interrupted")
    if path == "/bad-status":
        start_response(200, [])
        return [b""]
    if path == "/no-start":
        return [b"forgot start_response"]
    return route(environ, start_response)
