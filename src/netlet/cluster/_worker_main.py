"""A worker process's entry point: ``python -m netlet.cluster --join ADDR``.

Parses the arguments, reads the key from stdin, ties the process to its parent
when asked, turns SIGTERM into an orderly leave, and runs one ``Worker``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from netlet.cluster._worker import EXIT_CANNOT_LISTEN, KeyRefused, Worker, WorkerOptions
from netlet.cluster._worker_exit import _exit_with_parent, _watch_parent
from netlet.errors import ConfigError
from netlet.transport import TLSConfig

__all__ = ["main", "run_worker"]


def run_worker(opts: WorkerOptions) -> None:
    global _current
    worker = _current = Worker(opts)
    try:
        worker.run()
    finally:
        worker.close()


_current: Worker | None = None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM: the worker leaves by the front door (``Worker.terminate``)."""
    worker = _current
    if worker is None:
        raise SystemExit(0)
    worker.terminate()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m netlet.cluster")
    p.add_argument("--join", required=True)
    p.add_argument("--key-stdin", action="store_true",
                   help="read the cluster key (hex) on stdin, then any old keys of a "
                        "rotation, on one line, separated by spaces")
    p.add_argument("--pickle", action="store_true")
    p.add_argument("--credit", default="1")
    p.add_argument("--listen")
    p.add_argument("--embedded", action="store_true", help="exit with the head and the parent")
    p.add_argument("--with-parent", action="store_true", help="exit when the parent dies")
    p.add_argument("--code-dir", help="extract shipped code under this directory")
    for name in ("--tls-cert", "--tls-key", "--tls-ca"):
        p.add_argument(name)
    a = p.parse_args(argv)
    if a.with_parent:
        _exit_with_parent()
    keys = [bytes.fromhex(k) for k in sys.stdin.readline().split()] if a.key_stdin else []
    key, old_keys = (keys[0], tuple(keys[1:])) if keys else (None, ())
    tls = TLSConfig(a.tls_cert, a.tls_key, a.tls_ca) if a.tls_cert else None
    if a.embedded:
        _watch_parent()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    credit: int | str = a.credit if a.credit == "auto" else int(a.credit)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        run_worker(WorkerOptions(a.join, key=key, allow_pickle=a.pickle, credit=credit,
                                 listen=a.listen, exit_with_head=a.embedded,
                                 code_dir=a.code_dir, old_keys=old_keys, tls=tls))
    except KeyboardInterrupt:
        pass
    except KeyRefused as e:
        print(e.message, file=sys.stderr)
        raise
    except OSError as e:
        if not str(e.strerror or "").startswith("cannot listen"):
            raise
        print(f"netlet worker: {e.strerror}", file=sys.stderr)
        raise SystemExit(EXIT_CANNOT_LISTEN) from None
    except ConfigError as e:  # no key, a bad key directory: say what to do, no traceback
        raise SystemExit(f"netlet worker: {e}") from None
