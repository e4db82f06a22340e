"""A live web dashboard and Prometheus metrics for a netlet cluster (``netlet[web]``).

MVC: the models are the frozen statistics snapshots the head, its node and
the applications publish (``Head.statistics()``, ``Node.statistics()``,
a ``Provider``'s ``snapshot()``); the controllers are the routes
(``_app.py``); the views are Jinja2 templates (``templates/``). Live parts of
each page arrive by server-sent events; the one script is the package's own
(``static/dashboard.js``), so it works with no internet. See docs/dashboard.md.

This layer sits above ``netlet.cluster`` and below ``netlet.cli`` and the
apps: an application plugs in a ``Provider``; the dashboard never imports one.
"""

from netlet.web._security import derive_token
from netlet.web._server import DEFAULT_PORT, Dashboard, parse_listen
from netlet.web._sources import HeadSource, LocalHead, Provider, RemoteHead

__all__ = [
    "DEFAULT_PORT",
    "Dashboard",
    "HeadSource",
    "LocalHead",
    "Provider",
    "RemoteHead",
    "derive_token",
    "parse_listen",
]
