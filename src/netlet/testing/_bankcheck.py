"""The bank's promises, checked against what its ATMs saw: a pure function over records.

``check_books`` takes every request the ATMs made (``Op``, recorded before it
was sent) and the bank's own word after the calm: the outcome of every key
(``outcomes``, which settles a key the bank never saw as not applied, for
good), every account's balance, and its audit. The rules are the swarm's
(``apps/bank/_swarm.Swarm.verify``), and a few more:

* a key's journaled command is the one its ATM sent;
* an acknowledged request is applied; a refused one is not; one the client
  said never left the ATM (``BankUnavailable`` with ``reached`` false) is not;
  one the bank said (``outcome``) was applied, or was not, is or is not;
* each account holds exactly the sum of the requests applied to it, and money
  is neither made nor destroyed: the accounts hold what was deposited minus
  what was withdrawn;
* the journal holds one command per key and nothing else (no request applied
  twice, under another key, or from nowhere);
* the bank's audit (balances recomputed from the journal, its hash chain) is clean.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netlet.apps.bank._messages import AuditReport, RequestOutcome
from netlet.testing._bankparts import Op

__all__ = ["Books", "check_books"]


@dataclass(slots=True)
class Books:
    """What the check found besides problems: how the unknown requests were settled."""

    applied: int = 0
    unknown_applied: int = 0
    unknown_not_applied: int = 0


def check_books(ops: Sequence[Op], outcomes: Mapping[str, RequestOutcome | None],
                balances: Mapping[str, int], audit: AuditReport,
                other_commands: int) -> tuple[list[str], Books]:
    """Problems found (none: the books match), and counts. ``other_commands`` is how many
    journaled commands are no ATM's (the accounts' opening)."""
    problems: list[str] = []
    books = Books()
    expected = collections.Counter[str]()
    flow = 0
    for op in ops:
        found = outcomes.get(op.key)
        if found is not None and found.command != op.command():
            problems.append(f"{op.key}: the bank journaled {found.command}, "
                            f"not {op.command()}")
            continue
        done = found is not None and found.ok
        if op.status == "ok" and not done:
            problems.append(f"{op.key}: acknowledged {op.kind} is not applied ({found})")
        elif op.status == "refused" and done:
            problems.append(f"{op.key}: refused {op.kind} ({op.error}) was applied")
        elif op.status == "unsent" and done:
            problems.append(f"{op.key}: {op.kind} was applied, but its client said nothing "
                            f"was sent ({op.error})")
        if op.told and (op.told == "applied") != done:
            problems.append(f"{op.key}: the bank told its ATM the {op.kind} was {op.told}, "
                            f"but in the end it is {'' if done else 'not '}applied")
        if op.status in ("unknown", "pending"):
            books.unknown_applied += done
            books.unknown_not_applied += not done
        if done:
            books.applied += 1
            sign = 1 if op.kind == "Deposit" else -1
            expected[op.account] += sign * op.amount
            if op.kind == "Transfer":
                expected[op.dst] += op.amount
            else:
                flow += sign * op.amount
    for account in sorted(set(balances) | set(expected)):
        if balances.get(account) != expected[account]:
            problems.append(f"{account}: the bank holds {balances.get(account)}, the ATMs "
                            f"saw {expected[account]} applied")
    if sum(balances.values()) != flow:
        problems.append(f"money does not add up: the accounts hold {sum(balances.values())}, "
                        f"deposits minus withdrawals are {flow}")
    journaled, keys = audit.n_commands, len({op.key for op in ops}) + other_commands
    if journaled != keys:
        problems.append(f"the journal holds {journaled} commands for {keys} keys")
    if not audit.ok:
        problems.extend(f"audit: {v}" for v in audit.violations or ["not ok"])
    return problems, books
