"""The head's SQLite store on its own: what a restarted head reads back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from netlet.cluster import HeadStore
from netlet.cluster._scheduler import Task
from netlet.errors import CallCancelled, ConfigError, WorkerLost


def _stored(tmp_path: Path, error: BaseException) -> BaseException:
    path = tmp_path / "head.db"
    store = HeadStore(path)
    store.add_tasks([Task("t1", "c", "m:f", b"", 3, 0)], {})
    store.finish("t1", ["t1", False, None, error])
    store.close()
    [task] = HeadStore(path).tasks()
    assert task.result is not None
    return task.result[3]  # type: ignore[no-any-return]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("error", [WorkerLost("the worker died 4 times"),
                                   ConfigError("no worker can import m:f"),
                                   CallCancelled("cancelled by an operator")])
def test_a_head_made_error_comes_back_as_the_same_exception(
        tmp_path: Path, error: BaseException) -> None:
    """Found by the simulation: after a restart, a task that had failed with
    WorkerLost reached its client as a bare string (PROTOCOL.md 16.4 says an
    exception); netlet's own client papered over it, a foreign one would not."""
    back = _stored(tmp_path, error)
    assert type(back) is type(error)
    assert str(back) == str(error)


@pytest.mark.timeout(10)
def test_a_store_written_by_an_older_head_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "head.db"
    store = HeadStore(path)
    store.add_tasks([Task("t1", "c", "m:f", b"", 3, 0)], {})
    store.close()
    with sqlite3.connect(path) as db:  # the old form: only the error's text
        db.execute("UPDATE tasks SET state='done', result=? WHERE id='t1'",
                   (msgpack.packb(["t1", False, None, "the worker died"]),))
    [task] = HeadStore(path).tasks()
    assert task.result is not None
    assert isinstance(task.result[3], WorkerLost)


@pytest.mark.timeout(10)
def test_reserved_epochs_survive_a_restart_and_never_go_back(tmp_path: Path) -> None:
    """Found by the simulation (half its seeds, once it checked): a head restarted from
    its store handed out epochs from 1 again, below those its workers already had
    (PROTOCOL.md 16.1: larger than any before)."""
    path = tmp_path / "head.db"
    store = HeadStore(path)
    assert store.epoch_floor() == 0
    store.reserve_epochs(64)
    store.reserve_epochs(10)  # a lower reservation never lowers the floor
    store.close()
    assert HeadStore(path).epoch_floor() == 64
