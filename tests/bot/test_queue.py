"""The fair queue's bookkeeping, without Discord or an engine."""

from __future__ import annotations

import itertools
import random

import pytest

from bot.queue import FairQueue, Lead, QueueFull
from dreambot.wire import Progress


def drain(queue: FairQueue) -> list[int]:
    order = []
    while (job := queue.next()) is not None:
        order.append(job)
        queue.done(job)
    return order


def test_members_take_turns() -> None:
    queue = FairQueue(max_per_member=10)
    for job in range(1, 11):  # member 1 queues ten jobs
        queue.submit(job, member_id=1)
    queue.submit(11, member_id=2)  # then member 2 one
    queue.submit(12, member_id=3)
    assert queue.position(11) == 1 and queue.position(12) == 2
    assert drain(queue)[:4] == [1, 11, 12, 2]


def test_positions_are_the_order_jobs_start_in() -> None:
    queue = FairQueue(max_per_member=100)
    rng = random.Random(4)
    for job in range(1, 40):
        queue.submit(job, member_id=rng.randrange(6))
    promised = queue.order()
    assert [queue.position(job) for job in promised] == list(range(len(promised)))
    assert drain(queue) == promised


def test_a_member_with_one_job_waits_at_most_one_job_per_other_member() -> None:
    rng = random.Random(7)
    queue = FairQueue(max_per_member=1000, max_queued=100_000)
    jobs = itertools.count(1)
    worst = 0
    for _ in range(300):
        for _ in range(rng.randrange(4)):  # busy members keep adding
            queue.submit(next(jobs), member_id=rng.randrange(20))
        newcomer, job = 1000 + rng.randrange(10**6), next(jobs)
        others = len({queue.member_of(j) for j in queue.order()})
        queue.submit(job, member_id=newcomer)
        worst = max(worst, queue.position(job) - others)
        for _ in range(rng.randrange(3)):
            done = queue.next()
            if done is not None:
                queue.done(done)
    assert worst <= 0


@pytest.mark.parametrize(("limits", "submits", "message"), [
    ({"max_per_member": 2}, [(1, 7), (2, 7), (3, 7)], "You already have 2 jobs queued or running"),
    ({"max_per_member": 1}, [(1, 7), (2, 7)], "You already have 1 job queued or running"),
    ({"max_queued": 2}, [(1, 7), (2, 8), (3, 9)], "The queue is full: it holds 2 jobs at most"),
    ({"max_queued": 1}, [(1, 7), (2, 8)], "The queue is full: it holds 1 job at most"),
])
def test_caps_refuse_with_when_to_try_again(limits, submits, message) -> None:
    queue = FairQueue(**limits)
    for job, member in submits[:-1]:
        queue.submit(job, member)
    with pytest.raises(QueueFull, match=message) as refused:
        queue.submit(*submits[-1])
    assert refused.value.retry_after and "try again" in str(refused.value)
    assert len(queue) == len(submits) - 1  # nothing half-queued


def test_running_jobs_count_against_the_member_cap_until_done() -> None:
    queue = FairQueue(max_per_member=1)
    queue.submit(1, 7)
    assert queue.next() == 1
    with pytest.raises(QueueFull):
        queue.submit(2, 7)
    queue.done(1)
    queue.submit(2, 7)


def test_the_cooldown_counts_from_the_last_job() -> None:
    now = [100.0]
    queue = FairQueue(cooldown_seconds=30, clock=lambda: now[0])
    queue.submit(1, 7)
    now[0] += 10
    with pytest.raises(QueueFull, match=r"wait 20 s .*cooldown") as refused:
        queue.submit(2, 7)
    assert refused.value.retry_after == pytest.approx(20)
    queue.submit(3, 8)  # others are not held back
    now[0] += 20
    queue.submit(2, 7)


def test_cancel_a_queued_job_and_batches_take_compatible_jobs_in_fair_order() -> None:
    queue = FairQueue(max_per_member=5)
    for job, member in [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3)]:
        queue.submit(job, member)
    assert queue.cancel(4) and not queue.cancel(4)
    assert queue.next() == 1
    assert not queue.cancel(1)  # running: the engine stops it, not the queue
    # Member 1's job 2 would serve member 1 twice while member 2 waits: not in this batch.
    assert queue.take(lambda job: job != 3, limit=2) == [5]
    assert queue.order() == [3, 2]


def test_a_lone_members_jobs_still_batch_together() -> None:
    queue = FairQueue(max_per_member=5)
    for job in (1, 2, 3):
        queue.submit(job, 1)
    assert queue.next() == 1 and queue.take(lambda job: True, limit=3) == [2, 3]


def test_a_retried_job_goes_first() -> None:
    queue = FairQueue()
    queue.submit(1, 1)
    queue.submit(2, 2)
    assert queue.next() == 1
    queue.done(1)
    queue.submit(1, 1, front=True, check=False)
    assert queue.order() == [1, 2]
    with pytest.raises(ValueError):
        queue.submit(2, 2)  # already queued


def test_a_preferred_model_goes_first_where_fairness_allows() -> None:
    queue = FairQueue(max_per_member=10)
    model = {}
    for job, (member, name) in enumerate([(1, "a"), (2, "b"), (3, "a"), (4, "b")], start=1):
        queue.submit(job, member_id=member)
        model[job] = name
    held = "b"

    def prefer(job: int) -> bool:
        return model[job] == held

    # Plain round robin would switch at every job: a, b, a, b. Grouped: the engine holds b.
    assert queue.next(prefer) == 2
    assert queue.next(prefer) == 4
    held = "a"
    assert queue.next(prefer) == 1 and queue.next(prefer) == 3


@pytest.mark.parametrize("seed", range(20))
def test_grouping_never_lets_a_member_be_passed_twice(seed: int) -> None:
    """Whatever jobs arrive and whatever the engine prefers, batches included, no waiting member
    sees any other member served twice since its own last turn: round robin's bound."""
    rng = random.Random(seed)
    queue = FairQueue(max_per_member=100, max_queued=10_000)
    model, member_of = {}, {}
    passed: dict[int, dict[int, int]] = {}  # waiting member -> other member -> services since its turn
    job_ids = itertools.count(1)
    held = "a"

    def served(job: int) -> None:
        member = member_of[job]
        for waiting, counts in passed.items():
            if waiting != member:
                counts[member] = counts.get(member, 0) + 1
                assert counts[member] <= 1, f"member {waiting} saw member {member} served twice while it waited"
        passed.pop(member, None)
        if member in {member_of[j] for j in queue.order()}:
            passed[member] = {}

    for _ in range(300):
        for _ in range(rng.randrange(3)):  # arrivals
            job, member = next(job_ids), rng.randrange(6)
            queue.submit(job, member_id=member)
            model[job], member_of[job] = rng.choice("ab"), member
            passed.setdefault(member, {})
        first = queue.next(lambda j, held=held: model[j] == held)
        if first is None:
            continue
        served(first)
        # The rest of a batch: jobs of the same model, as JobQueue takes them.
        batch = [first]
        for job in queue.take(lambda j, same=model[first]: model[j] == same, limit=rng.randrange(3)):
            served(job)
            batch.append(job)
        held = model[first]  # the engine now holds this job's model
        for job in batch:
            queue.done(job)


def test_the_next_call_is_sent_once_every_job_of_the_last_is_near_its_end() -> None:
    lead = Lead()
    lead.expect([1, 2])  # a batch whose jobs run as two pipeline calls, one after the other
    lead.progressed(Progress(job_id=1, step=0, total=20))
    lead.progressed(Progress(job_id=1, step=20, total=20))  # job 1's pictures are made: job 2's are not
    assert not lead.event.is_set()
    lead.progressed(Progress(job_id=2, step=0, total=20, loading="another model"))  # not a step
    lead.progressed(Progress(job_id=2, step=0, total=20))
    assert not lead.event.is_set()
    lead.progressed(Progress(job_id=2, step=20, total=20))
    assert lead.event.is_set()
    quiet = Lead()  # a call that expects nothing (a retried job's): only its end sets it
    quiet.progressed(Progress(job_id=3, step=20, total=20))
    assert not quiet.event.is_set()
