"""A WSGI app for the proxy tests: it answers with what it saw, as JSON.

GET /slow?s=N sleeps N seconds first; POST bodies are counted and hashed.
"""
import hashlib
import json
import os
import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/slow":
        q = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
        time.sleep(float(q.get("s", "1")))
    if path == "/healthz":
        status = "200 OK" if not os.path.exists(os.environ.get("ECHO_DOWN_FILE", "/nonexistent")) else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok\n"]
    body = environ["wsgi.input"].read()
    seen = {
        "name": os.environ.get("ECHO_NAME", ""),
        "pid": os.getpid(),
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "script_name": environ.get("SCRIPT_NAME", ""),
        "query": environ.get("QUERY_STRING", ""),
        "uri": environ.get("RAW_URI", environ.get("REQUEST_URI", "")),
        "host": environ.get("HTTP_HOST", ""),
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "scheme": environ.get("wsgi.url_scheme", ""),
        "xff": environ.get("HTTP_X_FORWARDED_FOR", ""),
        "xfp": environ.get("HTTP_X_FORWARDED_PROTO", ""),
        "xfh": environ.get("HTTP_X_FORWARDED_HOST", ""),
        "connection": environ.get("HTTP_CONNECTION", ""),
        "proxy": environ.get("HTTP_PROXY", ""),
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    out = json.dumps(seen).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(out))),
               ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
    start_response("200 OK", headers)
    return [out]
