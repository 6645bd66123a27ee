"""pytest-django for this directory only: Django is configured when a test here first needs it.

In a Django project, say where the settings are (``DJANGO_SETTINGS_MODULE = "mysite.settings"``
in the pytest configuration), and of this file keep only ``live_server_backlog`` (and the
``live_server`` override that applies it). This repository is no Django project: its own tests
run pytest sessions in process (pytester), and once Django is configured for the outer session,
pytest-django sets up Django's test environment there and every inner session fails
(``setup_test_environment() was already called``). So here:

- ``django_configured`` configures Django from ``settings.py`` on first use, its databases in
  temporary files (the subprocess server opens the test database);
- ``django_test_environment``, ``django_db_blocker`` and ``live_server``, pytest-django's session
  fixtures, are overridden for this directory: the plugin's first two ran at the session's first
  test and found Django unconfigured (a no-op, and no blocker); these run after
  ``django_configured``, and the first leaves Django's test environment alone (``settings.py``
  already has what it would set);
- the tests here run last, as pytest-django itself orders transactional tests, so no test
  outside this directory starts with Django configured.
"""

from __future__ import annotations

from pathlib import Path

import django
import pytest
from pytest_django import DjangoDbBlocker
from pytest_django.live_server_helper import LiveServer
from pytest_django.plugin import blocking_manager_key

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def django_configured(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``settings.configure()`` from the project's settings module, test database in a file.

    SQLite's test database is in memory by default; the subprocess server must open it, so it is
    a file (pytest-django adds ``_gw0``... to its name under xdist). ``live_server`` may start
    before the test database exists, so the main database is a file too.
    """
    from django.conf import settings

    if settings.configured:
        return
    from examples.recipes.django_project import settings as project

    values = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    directory = tmp_path_factory.mktemp("django")
    database = {
        **project.DATABASES["default"],
        # A file, never ":memory:": live_server hands an in-memory database's one connection to
        # its request threads, and SQLite used by several threads at once crashed the process.
        "NAME": str(directory / "unused.sqlite3"),  # the tests use only the test database
        "TEST": {"NAME": str(directory / "test.sqlite3")},
    }
    values["DATABASES"] = {"default": database}
    settings.configure(**values)
    django.setup()


@pytest.fixture(scope="session")
def django_test_environment(django_configured: None) -> None:
    """Django configured; its test environment left alone (see the module docstring)."""


@pytest.fixture(scope="session")
def django_db_blocker(django_configured: None, request: pytest.FixtureRequest) -> DjangoDbBlocker:
    """pytest-django's database blocker, fetched once Django is configured."""
    return request.config.stash[blocking_manager_key]


@pytest.fixture(scope="session")
def live_server_backlog() -> None:
    """A listen backlog for a race: Django's test server asks for 10.

    ``live_server`` listens with ``WSGIServer.request_queue_size``, 10. A race connects every
    client of a resource at once: with 20, the connections past the backlog waited a second
    for a SYN retransmit (a 4 x 20 race took 2.8 s instead of 0.5 s) or were reset (errors that
    failed the race). Any Django project racing ``live_server`` needs this, before it starts.
    """
    from django.core.servers.basehttp import ThreadedWSGIServer

    ThreadedWSGIServer.request_queue_size = 4096


@pytest.fixture(scope="session")
def live_server(django_configured: None, live_server_backlog: None, live_server: LiveServer) -> LiveServer:
    """pytest-django's ``live_server``, started once Django is configured (it skips otherwise)."""
    return live_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """This directory's tests last, as pytest-django orders transactional tests."""
    items.sort(key=lambda item: item.path.is_relative_to(HERE))
