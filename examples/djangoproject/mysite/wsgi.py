"""WSGI entry point of the mysite project: the module-level ``application``.

Serve it with Portico (see ../README.md):

    portico run --python /usr/bin/python3 --chdir examples/djangoproject mysite.wsgi
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
