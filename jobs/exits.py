"""The exit codes every command of the job shares, and the mapping of errors to them.

0 done; 2 a bad argument, profile, manifest or model (before any Spark work where possible);
3 the output does not account for every input row (after the run's own repair); 4 the output is
in use: another run holds its lease (refused before any work), or this run lost it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_BAD_INPUT = 2
EXIT_ACCOUNTING = 3
EXIT_OUTPUT_BUSY = 4


def exit_status(command: Callable[[], int], statuses: dict[type[Exception], int | Callable[[Exception], int]]) -> int:
    """command()'s status; an error of a listed type prints `error: ...` on stderr and gives its status
    (a number, or a function of the error)."""
    try:
        return command()
    except tuple(statuses) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = next(s for kind, s in statuses.items() if isinstance(exc, kind))
        return status(exc) if callable(status) else status


def output_busy() -> dict[type[Exception], int]:
    """The lease's errors -> EXIT_OUTPUT_BUSY, for every command that writes an output."""
    from jobs.lease import LeaseHeld, LeaseLost

    return dict.fromkeys((LeaseHeld, LeaseLost), EXIT_OUTPUT_BUSY)
