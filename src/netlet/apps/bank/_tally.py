"""What the ATMs saw, held against the bank's own word: the check a swarm and the
seeded simulation share (a pure function: no I/O, no clock).

Each request an ATM made is recorded before it is sent (``Request``); after
the run, the bank's outcome of every key settles it. The rules: a key's
journaled command is the one its ATM sent; an acknowledged request is applied,
a refused one is not, nor one the client said never left the ATM (``unsent``);
and the money the applied requests moved is what each account must hold.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from netlet.apps.bank._messages import RequestOutcome

__all__ = ["Request", "Tally", "journal_form", "tally"]


class Request(Protocol):
    """One mutating request as its ATM saw it (``SwarmOp``, the simulation's ``Op``)."""

    key: str
    kind: str
    account: str
    dst: str
    amount: int
    status: str
    error: str


def journal_form(op: Request) -> dict[str, str | int]:
    """The command the bank journals for ``op`` (as its ``outcomes`` answer shows it)."""
    if op.kind == "Transfer":
        return {"type": "Transfer", "src": op.account, "dst": op.dst, "amount": op.amount}
    return {"type": op.kind, "account": op.account, "amount": op.amount}


@dataclass(slots=True)
class Tally:
    """Problems found so far, and what the applied requests add up to."""

    problems: list[str] = field(default_factory=list)
    done: dict[str, bool] = field(default_factory=dict)
    """Per key whose journaled command matched: whether the bank applied it."""
    expected: collections.Counter[str] = field(default_factory=collections.Counter)
    """What each account must hold: the sum of the applied requests on it."""
    flow: int = 0
    """Deposits minus withdrawals applied: what all the accounts must hold together."""
    applied: int = 0
    unknown_applied: int = 0
    unknown_not_applied: int = 0

    def balances(self, balances: Mapping[str, int], accounts: Iterable[str]) -> None:
        """Check the bank's ``balances`` of ``accounts`` against what was applied."""
        for account in accounts:
            if balances.get(account) != self.expected[account]:
                self.problems.append(f"{account}: the bank holds {balances.get(account)}, "
                                     f"the ATMs saw {self.expected[account]} applied")
        if sum(balances.values()) != self.flow:
            self.problems.append(f"money does not add up: the accounts hold "
                                 f"{sum(balances.values())}, deposits minus withdrawals "
                                 f"are {self.flow}")


def tally(ops: Iterable[Request], outcomes: Mapping[str, RequestOutcome | None]) -> Tally:
    """Hold every request against its key's outcome (None: the bank never applied it)."""
    t = Tally()
    for op in ops:
        found = outcomes.get(op.key)
        if found is not None and found.command != journal_form(op):
            t.problems.append(f"{op.key}: the bank journaled {found.command}, "
                              f"not {journal_form(op)}")
            continue
        done = t.done[op.key] = found is not None and found.ok
        if op.status == "ok" and not done:
            t.problems.append(f"{op.key}: acknowledged {op.kind} is not applied ({found})")
        elif op.status == "refused" and done:
            t.problems.append(f"{op.key}: refused {op.kind} ({op.error}) was applied")
        elif op.status == "unsent" and done:
            t.problems.append(f"{op.key}: {op.kind} was applied, but its client said "
                              f"nothing was sent ({op.error})")
        if op.status in ("unknown", "pending"):
            t.unknown_applied += done
            t.unknown_not_applied += not done
        if done:
            t.applied += 1
            sign = 1 if op.kind == "Deposit" else -1
            t.expected[op.account] += sign * op.amount
            if op.kind == "Transfer":
                t.expected[op.dst] += op.amount
            else:
                t.flow += sign * op.amount
    return t
