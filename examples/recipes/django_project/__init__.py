"""The Django recipe: a tiny project (settings, one app) and its tests, with live_server and with gunicorn."""
