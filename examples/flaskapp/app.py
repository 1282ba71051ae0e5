"""A small Flask application for Portico: a page, JSON, a file upload and a form echo.

Run it from the repository root with Debian's Flask (installed for /usr/bin/python3):

    go run ./cmd/portico run --python /usr/bin/python3 --chdir examples/flaskapp app:app
"""

import hashlib

from flask import Flask, jsonify, render_template, request

app = Flask(__name__)


@app.get("/")
def index():
    """An HTML page rendered from templates/index.html."""
    return render_template("index.html", server=request.environ.get("SERVER_SOFTWARE", ""))


@app.get("/json")
def json_view():
    """A small JSON document, with a few request details to show what the app sees."""
    return jsonify(
        message="Hello from Flask",
        method=request.method,
        path=request.path,
        scheme=request.scheme,
        multithread=bool(request.environ.get("wsgi.multithread")),
        multiprocess=bool(request.environ.get("wsgi.multiprocess")),
    )


@app.post("/upload")
def upload():
    """Accept a multipart file in the field "file"; answer its name, size and sha256."""
    f = request.files.get("file")
    if f is None:
        return jsonify(error='missing multipart file field "file"'), 400
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = f.stream.read(64 * 1024)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return jsonify(name=f.filename, size=size, sha256=digest.hexdigest())


@app.post("/echo")
def echo():
    """Send the submitted form fields back as JSON: each name maps to the list of its values."""
    return jsonify(request.form.to_dict(flat=False))


if __name__ == "__main__":
    # Development only: Flask's own server. Use Portico (see README.md) to serve it.
    app.run(debug=True)
