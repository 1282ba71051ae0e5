"""The benchmark page: a table of 100 rows rendered from a template."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

# Built once: the page measures rendering, not building the data.
ROWS = [
    {"id": i, "name": "Item %d" % i, "email": "user%d@example.com" % i, "in_stock": i % 3 != 0}
    for i in range(1, 101)
]


@require_GET
def rows(request):
    """An HTML page with a 100-row table (template inheritance, a for loop with
    cycle and if, a CSRF token), about 2-3 ms of Django per request."""
    return render(request, "benchsite/rows.html", {"title": "100 rows", "rows": ROWS, "form": True})


@require_GET
def rows_public(request):
    """The same table without the form: no CSRF token, so no csrftoken cookie
    and no Vary: Cookie; a page that is the same for every visitor, which a
    shared cache may keep (bench/run.sh's django-cache scenario). /rows sets
    a cookie of its own on every answer to a visitor without one, and no
    shared cache stores an answer with Set-Cookie by default (nginx neither)."""
    return render(request, "benchsite/rows.html", {"title": "100 rows", "rows": ROWS, "form": False})
