"""The smallest useful WSGI application: a plain-text greeting.

Run it with Portico from the repository root:

    go run ./cmd/portico run examples/hello/app.py
"""

BODY = b"Hello, World!\n"


def application(environ, start_response):
    """Answer every request with a fixed plain-text body (PEP 3333)."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(BODY))),
        ],
    )
    if environ.get("REQUEST_METHOD") == "HEAD":
        return [b""]
    return [BODY]
