"""The tour of netlet that ``netlet demo`` (and so ``make run``) shows.

It lives among the apps because it runs them (the prime search, the bank and
its ATMs) beside the core: the import-linter layers put ``netlet.apps`` on top,
so only here may one module use both. ``netlet demo`` is registered in
``netlet.cli._main`` as ``"netlet.apps.tour._cli:demo"`` and imported only
when it runs. The parts: ``_parts`` (calls, the cluster, primes), ``_bank``;
the runner that gives each part a time limit: ``_core``.
"""

__all__: list[str] = []
