"""Settings of the Django recipe's tiny project: one app, SQLite, one middleware.

The database file is ``RECIPES_DJANGO_DB``. The recipe's subprocess server is pointed at the
test database that pytest-django created, so it sees the rows the test wrote (committed, under
``django_db(transaction=True)``). The test process itself configures Django from these values
(see ``conftest.py``), with the test database in a temporary directory.
"""

from __future__ import annotations

import os

SECRET_KEY = "recipe-only-not-a-secret"  # noqa: S105 - a throwaway project's key
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["examples.recipes.django_project.booking"]
MIDDLEWARE = ["examples.recipes.django_project.booking.middleware.stamp_arrival"]
ROOT_URLCONF = "examples.recipes.django_project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RECIPES_DJANGO_DB", ":memory:"),
        "OPTIONS": {"timeout": 10},  # concurrent writers wait for SQLite's lock instead of failing
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
STATIC_URL = "/static/"  # live_server's static-files handler needs one, even with no static files
