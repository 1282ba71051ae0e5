"""Renders a logged-in Django admin change list (auth users, 100 rows) with
Django's test client and prints the HTML: the dynamic page the compression
levels are measured on. Run with Debian's Python, which has Django:

    /usr/bin/python3 internal/compress/testdata/mkadmin.py > internal/compress/testdata/django-admin.html
"""

import sys

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="portico-compress-testdata",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    TEMPLATES=[{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    STATIC_URL="/static/",
    USE_TZ=True,
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
)
django.setup()

from django.contrib import admin  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns = [path("admin/", admin.site.urls)]


def main():
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0, interactive=False)
    User.objects.create_superuser("admin", "admin@example.com", "secret")
    groups = [Group.objects.create(name=f"team-{i}") for i in range(5)]
    first = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Dennis", "Margaret", "Edsger", "Donald"]
    last = ["Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Ritchie", "Hamilton", "Dijkstra", "Knuth"]
    for i in range(99):
        f, l = first[i % 10], last[(i * 7) % 10]
        u = User.objects.create_user(f"{f.lower()}.{l.lower()}{i}", f"{f.lower()}{i}@example.org", "pw",
                                     first_name=f, last_name=l, is_staff=i % 3 == 0)
        u.groups.add(groups[i % 5])
    c = Client()
    c.login(username="admin", password="secret")
    resp = c.get("/admin/auth/user/")
    if resp.status_code != 200:
        sys.exit(f"admin change list: status {resp.status_code}")
    sys.stdout.write(resp.content.decode())


main()
