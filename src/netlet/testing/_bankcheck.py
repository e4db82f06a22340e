"""The bank's promises, checked against what its ATMs saw: a pure function over records.

``check_books`` takes every request the ATMs made (``Op``, recorded before it
was sent) and the bank's own word after the calm: the outcome of every key
(``outcomes``, which settles a key the bank never saw as not applied, for
good), every account's balance, and its audit. The rules are the swarm's
(``apps/bank/_tally``, which both run), and a few more:

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

from collections.abc import Mapping, Sequence

from netlet.apps.bank._messages import AuditReport, RequestOutcome
from netlet.apps.bank._tally import Tally, tally
from netlet.testing._bankparts import Op

__all__ = ["check_books"]


def check_books(ops: Sequence[Op], outcomes: Mapping[str, RequestOutcome | None],
                balances: Mapping[str, int], audit: AuditReport,
                other_commands: int) -> tuple[list[str], Tally]:
    """Problems found (none: the books match), and counts. ``other_commands`` is how many
    journaled commands are no ATM's (the accounts' opening)."""
    t = tally(ops, outcomes)
    problems = t.problems
    for op in ops:
        done = t.done.get(op.key)
        if op.told and done is not None and (op.told == "applied") != done:
            problems.append(f"{op.key}: the bank told its ATM the {op.kind} was {op.told}, "
                            f"but in the end it is {'' if done else 'not '}applied")
    t.balances(balances, sorted(set(balances) | set(t.expected)))
    journaled, keys = audit.n_commands, len({op.key for op in ops}) + other_commands
    if journaled != keys:
        problems.append(f"the journal holds {journaled} commands for {keys} keys")
    if not audit.ok:
        problems.extend(f"audit: {v}" for v in audit.violations or ["not ok"])
    return problems, t
