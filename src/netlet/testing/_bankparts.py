"""The bank's parts in a simulation: its ledger and service made to run on the loop, and ATMs.

The real ledger commits on a writer thread and wakes the loop when it is done,
and a node runs a concurrent service's plain (not async) methods on its thread
pool: both finish at a real moment the virtual clock cannot order, so a run
would not repeat. Here they run on the loop instead, through the same code:

* ``SimLedger`` is the real ``Ledger`` whose async face (``execute_aio``,
  ``check_pin_aio``) calls the blocking one: the loop waits while the writer
  thread commits, as if the commit took no time, so nothing else runs meanwhile.
  Its ``on_commit`` hook lets the simulation kill the bank right after a commit,
  before the answer leaves: the moment that makes an applied request unknown.
* ``BankFace`` serves the real ``BankService`` with every method async: a
  plain method runs on the loop, at once.

An ATM (``SimAtm``) is a simulated process with a ``BankClient`` on its node:
it signs customers in (now and then with a wrong PIN) and makes deposits,
withdrawals and transfers under keys drawn from the seed, recording each
request (``Op``) before it is sent, as the swarm does (``apps/bank/_swarm``).
When a request ends unknown, the ATM often asks the bank what became of it
(``outcome``): "not applied" is a final answer it may act upon (the bank fences
the key), and the check holds the bank to it.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlet.apps.bank import (
    BankClient,
    BankError,
    BankService,
    BankUnavailable,
    CardSession,
    Command,
    Ledger,
    OutcomeUnknown,
    ServiceError,
)
from netlet.apps.bank._messages import (
    AccountInfo,
    AuditReport,
    BankInfo,
    CashReceipt,
    Closed,
    Opened,
    RequestOutcome,
    Session,
    StatementEntry,
    TransferReceipt,
)
from netlet.apps.bank._tally import journal_form
from netlet.errors import NetletError
from netlet.node import expose
from netlet.testing._process import Process

__all__ = ["BankFace", "Op", "SimAtm", "SimLedger", "unordered_methods"]


class SimLedger(Ledger):
    """The real ledger; its async methods wait for the writer on the loop (module docstring)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        missing = unordered_methods()
        if missing:  # a new async method would hand work to a thread the loop cannot order
            raise TypeError(f"SimLedger does not run Ledger.{', '.join(missing)} on the loop")
        super().__init__(*args, **kw)
        self.on_commit: Callable[[], None] | None = None
        """Called once a request's command is committed, before its answer is sent."""

    async def execute_aio(self, command: Command, idem_key: str) -> dict[str, Any]:
        result = self.execute(command, idem_key)
        if self.on_commit is not None:
            self.on_commit()
        return result

    async def check_pin_aio(self, account: str, pin: str, now: float | None = None) -> bool:
        return self.check_pin(account, pin, now)


def unordered_methods() -> list[str]:
    """Async methods of ``Ledger`` that ``SimLedger`` does not replace (should be none)."""
    return sorted(name for name, member in inspect.getmembers(Ledger)
                  if inspect.iscoroutinefunction(member) and name not in vars(SimLedger))


@expose(concurrent=True)
class BankFace:
    """``BankService``'s every method, async, so that a plain one runs on the loop."""

    def __init__(self, service: BankService) -> None:
        self._s = service

    async def login(self, account: object, pin: object) -> Session:
        return await self._s.login(account, pin)

    async def logout(self, token: object) -> None:
        await self._s.logout(token)

    async def deposit(self, token: object, amount: object, key: object) -> CashReceipt:
        return await self._s.deposit(token, amount, key)

    async def withdraw(self, token: object, amount: object, key: object) -> CashReceipt:
        return await self._s.withdraw(token, amount, key)

    async def transfer(self, token: object, dst: object, amount: object,
                       key: object) -> TransferReceipt:
        return await self._s.transfer(token, dst, amount, key)

    async def balance(self, token: object) -> int:
        return self._s.balance(token)

    async def statement(self, token: object, limit: object = 10) -> list[StatementEntry]:
        return self._s.statement(token, limit)

    async def outcome(self, token: object, key: object) -> RequestOutcome | None:
        return self._s.outcome(token, key)

    async def open_account(self, account: object, owner: object, pin_hash: object,
                           key: object) -> Opened:
        return self._s.open_account(account, owner, pin_hash, key)

    async def close_account(self, account: object, key: object) -> Closed:
        return self._s.close_account(account, key)

    async def accounts(self, prefix: object = "") -> list[AccountInfo]:
        return self._s.accounts(prefix)

    async def outcomes(self, keys: object) -> list[RequestOutcome | None]:
        return self._s.outcomes(keys)

    async def audit(self) -> AuditReport:
        return self._s.audit()

    async def info(self) -> BankInfo:
        return self._s.info()


@dataclass(slots=True)
class Op:
    """One mutating request and what its ATM saw of it.

    ``status``: ``pending`` while in flight (and for good if its ATM was killed),
    then ``ok``, ``refused`` (the bank said no), ``unsent`` (the client says
    nothing left the ATM) or ``unknown`` (no answer).
    """

    key: str
    kind: str
    account: str
    dst: str
    amount: int
    status: str = "pending"
    error: str = ""
    told: str = ""
    """For an unknown request whose ATM asked: ``applied`` or ``not-applied``."""

    def command(self) -> dict[str, str | int]:
        """The command the bank should journal for this request (as ``outcomes`` shows it)."""
        return journal_form(self)


@dataclass(frozen=True, slots=True)
class AtmPlan:
    """What every ATM shares: the bank, the customers, how long a request keeps trying."""

    address: str
    accounts: list[str]
    pin: str
    timeout: float
    retry_for: float
    max_amount: int


class SimAtm(Process):
    """An ATM: customers one after another, a few requests each, until ``stop``."""

    def __init__(self, name: str, plan: AtmPlan, rng: random.Random, ops: list[Op],
                 **kw: Any) -> None:
        super().__init__(name, **kw)
        self.plan, self.rng, self.ops = plan, rng, ops
        self.stopping = False
        self.busy = False
        self._n = 0

    def stopped(self) -> bool:
        return self.stopping

    async def start(self) -> None:
        node = await self.start_node()
        self.client = BankClient(self.plan.address, node=node, timeout=self.plan.timeout,
                                 retry_for=self.plan.retry_for)
        self.spawn(self._serve_customers())

    async def _serve_customers(self) -> None:
        rng, plan = self.rng, self.plan
        while not self.stopped():
            await self.clock.sleep(rng.uniform(0.0, 1.0))
            if self.stopped():
                return
            account = rng.choice(plan.accounts)
            pin = plan.pin if rng.random() > 0.05 else "0000"
            card = self.client.card(account, pin)
            self.busy = True
            try:
                await card.sign_in_aio(self.clock.monotonic() + plan.retry_for)
            except (BankError, NetletError) as exc:
                self.rec.note(f"{self.name}: {account} not signed in: {type(exc).__name__}")
                continue
            finally:
                self.busy = False
            for _ in range(rng.randint(1, 4)):
                if self.stopped():
                    return
                await self._one(card)
                await self.clock.sleep(rng.uniform(0.0, 0.5))

    async def _one(self, card: CardSession) -> None:
        rng, plan = self.rng, self.plan
        x, top = rng.random(), plan.max_amount
        self._n += 1
        key = f"{self.name}-{self._n}-{rng.getrandbits(32):08x}"
        if x < 0.4:
            op = Op(key, "Deposit", card.account, "", rng.randint(1, top))
        elif x < 0.7:
            op = Op(key, "Withdraw", card.account, "", rng.randint(1, top))
        else:
            dst = rng.choice([a for a in plan.accounts if a != card.account])
            op = Op(key, "Transfer", card.account, dst, rng.randint(1, top))
        self.ops.append(op)  # known before it is sent, whatever happens next
        args = (op.dst, op.amount) if op.kind == "Transfer" else (op.amount,)
        self.busy = True
        try:
            await card.mutate_aio(op.kind.lower(), *args, key=op.key,
                                  deadline=self.clock.monotonic() + plan.retry_for)
            op.status = "ok"
        except OutcomeUnknown as exc:
            op.status, op.error = "unknown", str(exc.reason)[:80]
        except BankUnavailable as exc:  # not reached: the client says nothing was sent
            op.status, op.error = ("unsent", str(exc)[:80]) if not exc.reached else \
                ("unknown", str(exc)[:80])
        except (BankError, ServiceError) as exc:  # the bank answered no
            op.status, op.error = "refused", type(exc).__name__
        except asyncio.CancelledError:
            raise  # killed: the request stays pending, to be settled
        except Exception as exc:
            op.status, op.error = "unknown", f"{type(exc).__name__}: {exc}"
            self.rec.violation(f"{op.key}: the ATM got an unexpected {op.error}")
        finally:
            self.busy = False
        self.rec.note(f"{op.key} {op.kind} {op.account}>{op.dst} {op.amount}: {op.status}"
                      f"{' ' + op.error if op.status == 'refused' else ''}")
        if op.status == "unknown" and rng.random() < 0.7:
            await self._ask(card, op)

    async def _ask(self, card: CardSession, op: Op) -> None:
        """Ask the bank what became of ``op`` (an ATM deciding whether to pay out)."""
        self.busy = True
        try:
            answer = await card.request_aio(
                "outcome", op.key, key=None, what="asking for an outcome",
                deadline=self.clock.monotonic() + self.plan.retry_for,
                answer=(RequestOutcome, type(None)))
        except (BankError, NetletError) as exc:
            self.rec.note(f"{op.key}: no outcome: {type(exc).__name__}")
            return
        finally:
            self.busy = False
        op.told = "applied" if answer is not None and answer.ok else "not-applied"
        self.rec.note(f"{op.key}: the bank says {op.told}")
