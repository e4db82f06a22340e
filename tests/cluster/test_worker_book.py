"""The worker's book driven directly: no sockets, no threads, no clock.

Unit tests for each decision, then a hypothesis state machine that plays the
head, the network and the running thread against it (hand-outs, give-backs,
sends that fail and go again, rejoins) and checks PROTOCOL.md §16's rules
after every step. Each test takes well under a second; the machine about 3 s.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from netlet.cluster._worker_book import ARM, HOLD, REPORT_BATCH, SEND, WAIT, WorkerBook, want

Task = tuple[str, str, bytes, str]
Result = tuple[str, bytes]


def make(credit: int | str = 1, limits: tuple[int, int, int] = (1 << 20, 32, 1 << 16),
         ) -> WorkerBook[Task, Result]:
    return WorkerBook(lambda r: 64 + len(r[1]), limits, credit)


def tasks(*ids: str) -> list[Task]:
    return [(t, "m:f", b"", f"lease-{t}") for t in ids]


def hand(b: WorkerBook[Task, Result], rows: list[Task], seq: int) -> bool:
    """A hand-out of ``rows`` numbered ``seq`` (their ids, as a columnar one has them)."""
    return b.pulled([r[0] for r in rows], rows, seq)


def result(tid: str, size: int = 1) -> Result:
    return (tid, b"x" * size)


# -- want ---------------------------------------------------------------------------

def test_want_is_the_running_task_plus_the_credit() -> None:
    assert want(0, 0.001, None) == 1
    assert want(4, 0.001, 1e-6) == 5
    assert make(credit=3).want() == 4


def test_auto_credit_covers_a_round_trip_and_nothing_for_long_or_unmeasured_tasks() -> None:
    assert want("auto", 0.001, None) == 1  # not measured: assume long
    assert want("auto", 0.001, 1.0) == 1  # far longer than a round trip
    assert want("auto", 0.001, 0.0001) == 11  # ten tasks cover the trip, plus the running one
    assert want("auto", 1.0, 1e-9) == 65  # capped
    b = make(credit="auto")
    b.measured_rtt(0.001)
    b.finished(result("x"), 0.0, 0.0001)
    assert b.want() == want("auto", b.rtt, b.task_time)


# -- hand-outs ----------------------------------------------------------------------

def test_a_hand_out_is_queued_and_held_and_seen_only_grows() -> None:
    b = make()
    assert hand(b, tasks("a", "b"), 7) is False
    assert [t[0] for t in b.local] == ["a", "b"]
    assert b.held == {"a", "b"}
    assert b.seen == 7
    hand(b, tasks("c"), 5)  # a later reply of an earlier hand-out
    assert b.seen == 7
    assert b.heartbeat()[2] == 7


def test_an_empty_hand_out_asks_again_at_once() -> None:
    b = make()
    assert b.flush()[3] == 2
    assert b.pulling
    assert hand(b, [], 0) is True
    assert not b.pulling


def test_one_pull_in_flight_at_a_time_and_none_when_stopping() -> None:
    b = make(credit=4)
    assert b.flush()[3] == 5
    assert b.flush()[3] == 0  # the first is in flight
    b.pull_over()  # it failed, the worker joined again
    b.stopped()
    assert b.flush()[3] == 0


def test_a_pull_asks_for_the_room_left() -> None:
    b = make(credit=4)
    b.flush()
    hand(b, tasks("a", "b"), 1)
    b.take_next()
    assert b.flush()[3] == 5 - 1 - 1  # one queued, one running


# -- starting and finishing ---------------------------------------------------------

def test_a_start_is_told_at_once_until_tasks_are_known_to_be_short() -> None:
    b = make()
    hand(b, tasks("a", "b", "c"), 1)
    assert b.take_next() == tasks("a")[0]
    assert b.running == "a"
    assert b.step == SEND  # not measured: assume long
    assert b.take_started() == ["a"]
    assert b.finished(result("a"), 0.0, HOLD / 10) == ARM  # its result waits too
    b.take_next()
    assert b.step == WAIT  # short: the notice waits for the timer, armed already
    started, busy = b.tick()
    assert started == ["b"]
    assert busy
    b.finished(result("b"), 0.0, HOLD / 10)
    b.flush()
    assert b.tick() == ([], False)
    b.take_next()
    assert b.step == ARM


def test_a_result_says_its_task_started() -> None:
    b = make()
    hand(b, tasks("a"), 1)
    b.take_next()
    assert b.starting == {"a": None}
    b.finished(result("a"), 0.0, 0.1)
    first, reports, started, pull = b.flush()
    assert (first, reports, started, pull) == ([result("a")], [], [], 2)
    assert not b.starting


def test_a_result_goes_when_the_worker_needs_work_or_holds_it_too_long() -> None:
    b = make(credit=4)
    b.flush()
    hand(b, tasks("a", "b", "c", "d", "e"), 1)
    b.task_time = HOLD / 10
    b.take_next()
    assert b.step == ARM  # a short task: its notice waits for the timer
    assert b.finished(result("a"), 10.0, None) == WAIT  # four queued: the timer sends it
    b.take_next()
    assert b.finished(result("b"), 10.0 + HOLD / 2, None) == SEND  # room for two: pull
    first, _, _, pull = b.flush()
    assert pull == 2
    assert first == [result("a"), result("b")]
    b.take_next()
    assert b.finished(result("c"), 20.0, None) == WAIT  # a pull is in flight; armed
    b.take_next()
    assert b.finished(result("d"), 20.0 + 2 * HOLD, None) == SEND  # held for HOLD
    b.take_next()
    assert b.finished(result("e"), 30.0, None) == SEND  # nothing left to run


def test_many_results_go_without_waiting_for_the_timer() -> None:
    b = make(credit=100)
    b.flush()
    hand(b, tasks(*(f"t{i}" for i in range(REPORT_BATCH + 2))), 1)
    b.flush()  # a pull in flight
    b.task_time = HOLD / 10
    steps = []
    for i in range(REPORT_BATCH):
        b.take_next()
        steps.append(b.finished(result(f"t{i}"), 0.0, None))
    assert steps[-1] == SEND
    assert SEND not in steps[:-1]


def test_results_are_cut_into_messages_within_the_frame_limits() -> None:
    b = make(credit=0, limits=(1000, 2, 300))
    b.flush()
    hand(b, tasks("a", "b", "c", "d"), 1)
    for tid, size in (("a", 400), ("b", 400), ("c", 400), ("d", 10)):
        b.take_next()
        b.finished(result(tid, size), 0.0, 0.1)
    first, reports, _, pull = b.flush()
    assert pull == 1
    assert first == [result("a", 400), result("b", 400)]  # two big ones at most
    assert reports == [[result("c", 400), result("d", 10)]]


def test_a_result_stays_held_until_written_and_a_failed_send_goes_again_first() -> None:
    b = make(credit=0)
    b.flush()
    hand(b, tasks("a", "b"), 1)
    b.take_next()
    b.finished(result("a"), 0.0, 0.1)
    _, reports, _, _ = b.flush()
    assert reports == [[result("a")]]
    assert "a" in b.heartbeat()[1]  # not written yet
    b.kept(reports[0], ["z"])  # the report failed
    assert b.outbox == [result("a")]
    assert "z" in b.starting
    b.take_next()
    b.finished(result("b"), 0.0, 0.1)
    first, _, started, _ = b.flush()
    assert first == [result("a"), result("b")]  # in order, the old first
    assert started == ["z"]
    b.sent(first)
    assert b.heartbeat()[1] == []


def test_a_task_that_cannot_run_here_is_no_longer_held() -> None:
    b = make(credit=0)
    b.flush()
    hand(b, tasks("a"), 1)
    b.take_next()
    assert b.unrunnable("a") == SEND  # nothing else here: ask for work
    assert b.held == set()
    assert b.starting == {}
    assert b.running is None


def test_the_timer_disarms_when_nothing_runs_or_waits() -> None:
    b = make()
    hand(b, tasks("a"), 1)
    b.task_time = HOLD / 10
    b.take_next()
    assert b.step == ARM
    assert b.tick() == (["a"], True)  # running: tick again
    assert b.finished(result("a"), 0.0, None) == SEND
    b.flush()
    assert b.tick() == ([], False)
    assert not b.armed


# -- giving back --------------------------------------------------------------------

def test_give_back_drops_only_tasks_not_started() -> None:
    b = make(credit=4)
    b.flush()
    hand(b, tasks("a", "b", "c"), 1)
    b.take_next()
    assert b.give_back(["a", "c", "nope"]) == ["c"]
    assert [t[0] for t in b.local] == ["b"]
    assert b.held == {"a", "b"}
    assert b.running == "a"


def test_a_worker_that_gave_back_while_running_does_not_pull_them_back_at_once() -> None:
    """Simulation seed 1: two workers each ran a task with a prefetch pull waiting
    at the head; a task queued bounced between them at the speed of the round trip
    (the head took it back for the other's waiting pull, the worker pulled again
    right after giving it back)."""
    b = make(credit=1)
    hand(b, tasks("a", "b"), 1)
    assert b.take_next() == tasks("a")[0]
    assert b.give_back(["b"]) == ["b"]
    assert b.flush()[3] == 0, "it pulled right after giving back, while still running a task"
    assert b.finished(result("a"), 0.0, 0.1) == SEND  # once its task ends, it asks as usual
    first, _, _, pull = b.flush()
    assert pull == 2
    assert first == [result("a")]


def test_a_worker_left_with_nothing_after_giving_back_pulls_at_once() -> None:
    b = make(credit=1)
    hand(b, tasks("a", "b"), 1)
    assert b.give_back(["a", "b"]) == ["a", "b"]
    assert b.flush()[3] == 2


def test_a_task_handed_again_stays_held_while_its_old_result_goes() -> None:
    """The head requeued a task this worker held (its link broke: the head took it
    for dead), and handed it back to it after it joined again, under a new lease,
    while its old run's result still waited, or the old run went on. Sending that
    old result must not take the new hand-out out of ``holding``: the head would
    take it for lost and run it again elsewhere."""
    b = make(credit=1)
    hand(b, tasks("t"), 1)
    b.take_next()
    b.finished(result("t"), 0.0, 0.1)
    _, reports, _, _ = b.flush()
    b.kept([result("t")], [])  # its report failed: the link broke
    hand(b, [("t", "m:f", b"", "lease-2")], 2)  # after the rejoin, under a new lease
    first, reports, _, _ = b.flush()
    b.sent(first + [r for m in reports for r in m])
    assert "t" in b.heartbeat()[1], "the new hand-out of t is not in holding"
    # The same while the old run goes on.
    b = make(credit=1)
    hand(b, tasks("u"), 1)
    b.take_next()
    hand(b, [("u", "m:f", b"", "lease-2")], 2)
    b.finished(result("u"), 0.0, 0.1)
    first, reports, _, _ = b.flush()
    b.sent(first + [r for m in reports for r in m])
    assert "u" in b.heartbeat()[1], "the new hand-out of u is not in holding"
    assert b.take_next() == ("u", "m:f", b"", "lease-2")


def test_a_task_handed_again_replaces_its_older_copies() -> None:
    """Their leases are no longer the task's: running an older copy again, or
    sending its result, is work the head refuses."""
    b = make(credit=4)
    hand(b, tasks("s", "t", "v"), 1)
    b.take_next()
    b.finished(result("s"), 0.0, 0.1)  # its result waits
    hand(b, [("s", "m:f", b"", "lease-2"), ("t", "m:f", b"", "lease-2")], 2)
    assert list(b.local) == [tasks("v")[0], ("s", "m:f", b"", "lease-2"),
                             ("t", "m:f", b"", "lease-2")]
    assert b.outbox == []
    assert b.held == {"s", "t", "v"}


def test_epochs_are_the_heads() -> None:
    b = make()
    b.rejoined(3)
    assert b.heartbeat()[0] == 3


# -- the state machine --------------------------------------------------------------

class WorkerBookMachine(RuleBasedStateMachine):
    """The head hands out, takes back and answers pulls (or they fail); the running
    thread starts and finishes tasks; messages are written or fail and are kept.
    PROTOCOL.md §16's rules hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.credit = 2
        self.b = make(credit=self.credit, limits=(300, 2, 100))
        self.now = 0.0
        self.ids = itertools.count()
        self.handed: set[str] = set()
        self.sent: set[str] = set()
        self.back: set[str] = set()
        self.pull: tuple[list[Result], list[str], int] | None = None  # in flight
        self.epochs = [0]
        self.seen = 0

    # -- helpers ----------------------------------------------------------------------

    def flush(self, data: st.DataObject) -> None:
        b = self.b
        room = b.want() - len(b.local) - (b.running is not None)
        pulling = b.pulling
        idle = b.running is None and not b.local
        first, reports, started, pull = b.flush()
        if idle and not pulling:
            assert pull > 0, "a worker with nothing to run did not pull"
        assert pull <= max(0, room), "a pull asked for more than want minus held"
        if pulling or self.pull is not None:
            assert pull == 0, "two pulls in flight"
        if pull == 0:
            assert first == []
            assert started == []
        for msg in [first, *reports]:
            assert msg or msg is first, "an empty report"
            assert sum(64 + len(r[1]) for r in msg) <= 300 or len(msg) == 1
        for msg in reports:
            if data.draw(st.booleans(), label="report written"):
                b.sent(msg)
                self.sent.update(r[0] for r in msg)
            else:
                b.kept(msg, [])
        if pull:
            if data.draw(st.booleans(), label="exchange written"):
                b.sent(first)
                self.sent.update(r[0] for r in first)
                self.pull = (first, started, pull)
            else:  # failed at once: joined again
                b.kept(first, started)
                b.pull_over()

    # -- rules ------------------------------------------------------------------------

    @precondition(lambda self: self.pull is not None)
    @rule(data=st.data())
    def answer_pull(self, data: st.DataObject) -> None:
        assert self.pull is not None
        _, _, n = self.pull
        k = data.draw(st.integers(0, n), label="tasks")
        ids = [f"t{next(self.ids)}" for _ in range(k)]
        # The head may hand again a task it took back, or took this worker for dead
        # for (under a new lease): one whose result was sent, waits, or is queued.
        others = sorted(self.handed - {self.b.running} - set(ids))
        if k and others and data.draw(st.booleans(), label="hand one again"):
            again = data.draw(st.sampled_from(others), label="again")
            ids[0] = again
            self.sent.discard(again)
            self.back.discard(again)
        self.handed.update(ids)
        seq = data.draw(st.integers(0, 50), label="seq")
        self.pull = None
        self.seen = max(self.seen, seq)
        if hand(self.b, [(t, "m:f", b"", f"lease-{seq}") for t in ids], seq):
            self.flush(data)

    @precondition(lambda self: self.pull is not None)
    @rule()
    def pull_fails(self) -> None:
        assert self.pull is not None
        first, started, _ = self.pull
        self.pull = None
        self.b.kept(first, started)  # the exchange's reply never came: all of it again
        self.sent.difference_update(r[0] for r in first)
        self.epochs.append(self.epochs[-1] + 1)
        self.b.rejoined(self.epochs[-1])
        self.b.pull_over()

    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        if self.b.running is not None:
            return
        task = self.b.take_next()
        if task is None:
            return
        step = self.b.step
        if step == SEND:
            started = self.b.take_started()
            assert task[0] in started
            if not data.draw(st.booleans(), label="started written"):
                self.b.kept([], started)

    @precondition(lambda self: self.b.running is not None)
    @rule(data=st.data(), took=st.sampled_from([None, HOLD / 10, 0.1]),
          size=st.integers(0, 200))
    def finish(self, data: st.DataObject, took: float | None, size: int) -> None:
        tid = self.b.running
        assert tid is not None
        if self.b.finished(result(tid, size), self.now, took) == SEND:
            self.flush(data)

    @precondition(lambda self: self.b.running is not None)
    @rule(data=st.data())
    def cannot_import(self, data: st.DataObject) -> None:
        tid = self.b.running
        assert tid is not None
        self.back.add(tid)
        if self.b.unrunnable(tid) == SEND:
            self.flush(data)

    @rule(data=st.data())
    def timer(self, data: st.DataObject) -> None:
        self.flush(data)
        started, _ = self.b.tick()
        if started and not data.draw(st.booleans(), label="started written"):
            self.b.kept([], started)

    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        asked = data.draw(st.lists(st.sampled_from(sorted(self.handed) or ["none"])),
                          label="asked")
        queued = {t[0] for t in self.b.local}
        running = self.b.running
        back = self.b.give_back(asked)
        assert set(back) <= queued & set(asked), "gave back a task it did not have queued"
        assert running not in back, "gave back a started task"
        self.back.update(back)
        self.flush(data)

    @rule()
    def time_passes(self) -> None:
        self.now += HOLD

    @rule()
    def heartbeat_rtt(self) -> None:
        self.b.measured_rtt(0.001)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def every_task_is_in_exactly_one_place(self) -> None:
        b = self.b
        queued = [t[0] for t in b.local]
        assert len(queued) == len(set(queued)), "a task queued twice"
        running = {b.running} if b.running is not None else set()
        waiting = [r[0] for r in b.outbox]
        assert len(waiting) == len(set(waiting)), "a result waits twice"
        places = [set(queued), running, set(waiting), self.sent, self.back]
        assert sum(len(p) for p in places) == len(set().union(*places)), \
            f"a task in two places: {places}"
        assert set().union(*places) == self.handed, "a task was lost"

    @invariant()
    def holding_names_every_task_not_sent(self) -> None:
        b = self.b
        _, holding, seen = b.heartbeat()
        not_sent = self.handed - self.sent - self.back
        assert set(holding) == not_sent
        assert seen == self.seen

    @invariant()
    def epochs_are_the_latest(self) -> None:
        assert self.b.heartbeat()[0] == self.epochs[-1]

    @invariant()
    def no_unstarted_task_is_announced(self) -> None:
        assert not set(self.b.starting) & {t[0] for t in self.b.local}

TestWorkerBook = WorkerBookMachine.TestCase
TestWorkerBook.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
