"""Reference systems built on netlet: a bank with ATMs, a distributed prime search.

They show how to build real services with netlet and are used by its tests and
benchmarks; nothing in netlet imports them.
"""

__all__: list[str] = []
