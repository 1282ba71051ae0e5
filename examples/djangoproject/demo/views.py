"""Views of the demo app."""

import hashlib

import django
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods


@require_GET
def index(request):
    """An HTML page rendered from demo/index.html (it links a static stylesheet)."""
    return render(
        request,
        "demo/index.html",
        {
            "django_version": django.get_version(),
            "server_software": request.META.get("SERVER_SOFTWARE", ""),
        },
    )


@require_GET
def api_hello(request):
    """A small JSON document."""
    return JsonResponse(
        {
            "message": "Hello from Django",
            "django": django.get_version(),
            "method": request.method,
            "path": request.path,
        }
    )


@require_http_methods(["GET", "POST"])
def upload(request):
    """GET: an upload form (with a CSRF token). POST: the multipart file in the
    field "file" -> JSON with its name, size and sha256."""
    if request.method == "GET":
        return render(request, "demo/upload.html")
    f = request.FILES.get("file")
    if f is None:
        return JsonResponse({"error": 'missing multipart file field "file"'}, status=400)
    digest = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"name": f.name, "size": size, "sha256": digest.hexdigest()})


@require_GET
def env(request):
    """What the WSGI server told Django about the request's location."""
    meta = request.META
    return JsonResponse(
        {
            "SCRIPT_NAME": meta.get("SCRIPT_NAME"),
            "PATH_INFO": meta.get("PATH_INFO"),
            "wsgi.url_scheme": meta.get("wsgi.url_scheme"),
            "absolute_uri": request.build_absolute_uri(),
            "HTTP_HOST": meta.get("HTTP_HOST"),
            "SERVER_NAME": meta.get("SERVER_NAME"),
            "SERVER_PORT": meta.get("SERVER_PORT"),
            "REMOTE_ADDR": meta.get("REMOTE_ADDR"),
        }
    )
