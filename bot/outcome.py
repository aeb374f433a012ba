"""How a job ends, from the engine client through the queue to delivery: its result, or a failure
with a kind and a message. Nothing on that path raises for a job's own failure; the queue decides
only about retries (a crash runs once more), and delivery turns each kind into words once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dreambot.wire import EngineError, GenerateResult


class FailureKind(StrEnum):
    INVALID = "invalid"  # the request breaks a rule the engine checks; the message says what to change
    OOM = "oom"  # the device ran out of memory; the engine freed it and carries on
    CANCELLED = "cancelled"  # by its member or a moderator (the message says who)
    CRASHED = "crashed"  # the engine process died while it held the job (or its worker was lost)
    UNSENT = "unsent"  # it never reached an engine (a worker went away first): it runs, uncounted
    TIMED_OUT = "timed out"  # past JOB_TIMEOUT_SECONDS; the engine was restarted
    UNAVAILABLE = "unavailable"  # no engine is running (the message says why)
    REFUSED = "refused"  # the server's rules, checked again as the job started (a ban, say)
    INTERNAL = "internal"  # a bug, in the engine or here: the member gets an apology, the log the detail


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str  # for the member where the kind is theirs to fix (invalid, oom, ...); else for the log
    public: str | None = None  # refused: what the channel where the notice is may read (the rest is private)


Outcome = GenerateResult | Failure


def failure_of(error: EngineError) -> Failure:
    """An engine's error (a local engine's or a worker's) as the queue and delivery read it."""
    try:
        kind = FailureKind(error.kind)
    except ValueError:  # a kind this bot does not know: an engine of another release
        kind = FailureKind.INTERNAL
    return Failure(kind, error.message)
