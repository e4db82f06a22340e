"""What a dashboard costs the process it runs in (bench D1 measures the throughput).

The web stack's import-time objects are kept out of the garbage collector's
full collections while a dashboard runs (``gc.freeze``), and given back when
the last one stops; a program's own freeze is left alone. About 1 s.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from netlet.web import Dashboard

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _board() -> Dashboard:
    return Dashboard(listen="127.0.0.1:0")


@pytest.mark.usefixtures("unfrozen")
def test_a_running_dashboard_keeps_long_lived_objects_out_of_full_collections() -> None:
    gc.collect()
    walked = len(gc.get_objects())  # what a full collection walks
    first, second = _board().start(), _board().start()
    try:
        assert gc.get_freeze_count() > 20_000  # the web stack, the test session's objects
        assert len(gc.get_objects()) < walked / 4
        first.stop()
        assert gc.get_freeze_count() > 20_000  # the other dashboard still runs
    finally:
        first.stop()
        second.stop()
    assert gc.get_freeze_count() == 0  # the last one gave them back to the collector
    first.stop()  # stopping again changes nothing
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("unfrozen")
def test_a_program_s_own_freeze_is_left_alone() -> None:
    gc.freeze()  # as a server does before it forks its workers
    frozen = gc.get_freeze_count()
    board = _board().start()
    running = gc.get_freeze_count()
    board.stop()
    assert running < frozen + 1000  # not frozen again: what the dashboard made is collected
    assert gc.get_freeze_count() > frozen * 0.9  # nor thawed (objects freed leave it)


@pytest.mark.usefixtures("unfrozen")
def test_a_dashboard_told_not_to_freeze_leaves_the_collector_alone() -> None:
    board = Dashboard(listen="127.0.0.1:0", gc_freeze=False).start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        board.stop()
