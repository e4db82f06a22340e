"""``netlet.Executor`` bound to the remote head a test started (importable by child scripts).

CPython's interpreter-shutdown tests run ``Executor(5)`` in a fresh ``python -c``
script; with this class that script reaches the head the test module runs,
found through the environment the test sets.
"""

from __future__ import annotations

import os

import netlet

__all__ = ["HEAD_ENV", "KEY_ENV", "RemoteExecutor"]

HEAD_ENV = "NETLET_TEST_HEAD"
KEY_ENV = "NETLET_TEST_KEY_FILE"


class RemoteExecutor(netlet.Executor):
    """An Executor on the head named by ``$NETLET_TEST_HEAD``; ``max_workers`` only validated.

    What tasks print comes back unprefixed, as CPython's tests expect of a
    process pool's children.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(os.environ[HEAD_ENV], max_workers=max_workers,
                         key_file=os.environ[KEY_ENV], allow_pickle=True,
                         log_to_driver=True, log_prefix="")
