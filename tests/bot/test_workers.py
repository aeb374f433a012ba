"""Workers on other hosts, end to end: a real nats-server, real `python -m engine worker` processes
with the tiny model, and the bot's own queue and WorkerHub (as `python -m bot` builds them with
NATS_URL). Each test names what it guards: fairness, the lease, the result taken once, NATS coming
and going, the bot coming and going."""

from __future__ import annotations

import asyncio
import secrets
import time

import nats
import pytest
import pytest_asyncio

from bot.outcome import Failure, FailureKind
from bot.store import Store
from dreambot import relay, wire
from dreambot.relay import WorkerStatus
from dreambot.wire import GenerateResult, ImageResult, Job
from tests.support.bot_process import BotProcess
from tests.support.nats import NatsServer
from tests.support.workers import Rig, WorkerProcess, outcome

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG = 150  # steps: a job that runs for seconds on the tiny model, long enough to act on it mid-way
MANAGE_GUILD = 1 << 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    nats_server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield nats_server
    nats_server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def crew(server, tiny_model, tmp_path_factory):
    """Two workers, shared by the tests of this module (a test that kills one starts another)."""
    workdir = tmp_path_factory.mktemp("workers")
    workers = {name: await WorkerProcess(name, server.url, workdir, tiny_model).start() for name in ("w1", "w2")}
    yield workers
    for worker in workers.values():
        await worker.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def rig(server, crew, tmp_path):
    bot = await Rig(tmp_path, server).start()
    await bot.wait_for_workers(len(crew))
    yield bot
    await bot.close()


async def first_progress(rig: Rig, job_id: int, timeout: float = 60.0) -> str:
    """The worker that runs `job_id`, once it has made a step of it."""
    deadline = time.monotonic() + timeout
    while not any(p.step > 0 for p in rig.progress[job_id]):
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)
    row = await rig.store.get_job(job_id)
    return row.worker


async def replace(crew: dict, name: str, server: NatsServer, tiny_model) -> None:
    """Start another worker in the place of the one named `name` (it loads while the test goes on)."""
    [slot] = [slot for slot, worker in crew.items() if worker.name == name]
    old = crew[slot]
    await old.stop()
    crew[slot] = await WorkerProcess(f"{slot}-{time.monotonic_ns() % 10**6}", server.url, old.log_path.parent,
                                     tiny_model).start()


def killer(crew: dict, name: str) -> WorkerProcess:
    return next(worker for worker in crew.values() if worker.name == name)


async def test_two_workers_share_a_stream_of_jobs_fairly(rig: Rig, crew) -> None:
    """The bot schedules (round robin across members), workers pull: both run jobs, each job once."""
    tickets = [await rig.submit(f"a red circle {i}", user=i % 3, seed=i) for i in range(8)]
    outcomes = [await outcome(ticket) for ticket in tickets]
    assert all(isinstance(o, GenerateResult) and o.images[0].data[:4] == b"\x89PNG" for o in outcomes)
    rows = [await rig.store.get_job(t.job.job_id) for t in tickets]
    assert {row.worker for row in rows} == {worker.name for worker in crew.values()}
    assert all(row.status == "delivering" and row.lease for row in rows)
    assert len({row.lease for row in rows}) == len(rows)  # a lease per hand-out


async def test_a_worker_killed_mid_job_loses_nothing_and_the_other_posts_it_once(rig: Rig, crew, server,
                                                                                 tiny_model) -> None:
    """The lease: a killed worker's job goes back to the front of the queue and runs on the other,
    counted as its one retry; its result is taken once."""
    ticket = await rig.submit("a blue square", steps=LONG)
    doomed = await first_progress(rig, ticket.job.job_id)
    first_lease = (await rig.store.get_job(ticket.job.job_id)).lease
    killer(crew, doomed).kill()
    await replace(crew, doomed, server, tiny_model)
    result = await outcome(ticket)
    assert isinstance(result, GenerateResult)
    row = await rig.store.get_job(ticket.job.job_id)
    assert row.worker != doomed and row.lease != first_lease and row.status == "delivering"
    assert ticket.attempts == 2


async def test_a_result_under_a_lease_the_bot_did_not_hand_out_is_refused(rig: Rig, server) -> None:
    """Security: a picture pushed by anyone but the worker the bot chose, or under a made-up or
    lapsed lease, never becomes a job's result."""
    job_id = await rig.record("a green triangle")
    forged = GenerateResult(job_id=job_id, images=(ImageResult(b"\x89PNG forged", 1, False, 0.0),), seed=1, width=64,
                            height=64, model="tiny")
    intruder = await nats.connect(server.url)
    headers = {relay.WORKER: "intruder", relay.LEASE: secrets.token_hex(16), relay.JOB: str(job_id), relay.PART: "0",
               relay.PARTS: "1"}
    try:
        unknown = await intruder.request(relay.RESULT, wire.encode(forged), timeout=5, headers=headers)
        status = WorkerStatus(session="intruder", name="intruder", device="cpu", model="tiny", dtype="float32",
                              safety_checker="opennsfw", protocol=wire.PROTOCOL_VERSION)
        await intruder.publish(relay.EVENT, status.encode(), headers={relay.WORKER: "intruder", relay.KIND: "status"})
        await intruder.flush()
        await asyncio.sleep(0.3)
        known = await intruder.request(relay.RESULT, wire.encode(forged), timeout=5, headers=headers)
    finally:
        await intruder.close()
    assert unknown.headers[relay.KIND] == "later"  # who are you? (nothing kept from a stranger)
    assert known.headers[relay.KIND].startswith("refused")
    assert (await rig.store.get_job(job_id)).status == "queued"


async def test_a_worker_of_another_release_holding_a_result_is_refused_not_kept_waiting(rig: Rig, server) -> None:
    """A worker of another protocol version is refused its results too (it then asks for work, hears
    why, and exits), rather than offering them for ever to a bot that answers 'later'."""
    old = await nats.connect(server.url)
    try:
        status = WorkerStatus(session="old", name="old", device="cpu", model="tiny", dtype="float32",
                              safety_checker="opennsfw", protocol=wire.PROTOCOL_VERSION - 1, holding=("x",))
        await old.publish(relay.EVENT, status.encode(), headers={relay.WORKER: "old", relay.KIND: "status"})
        await old.flush()
        await asyncio.sleep(0.3)
        answer = await old.request(relay.RESULT, b"{}", timeout=5, headers={
            relay.WORKER: "old", relay.LEASE: "x", relay.JOB: "1", relay.PART: "0", relay.PARTS: "1"})
        pulled = await old.request(relay.WORK, status.encode(), timeout=5, headers={relay.WORKER: "old"})
    finally:
        await old.close()
    assert answer.headers[relay.KIND].startswith("refused")
    assert "protocol version" in pulled.headers[relay.REFUSED]
    assert "old" not in {worker.name for worker in rig.hub.workers.values()}


async def test_cancel_reaches_a_job_on_a_remote_worker(rig: Rig) -> None:
    """Cancel travels over NATS and stops the job between two steps."""
    ticket = await rig.submit("a slow circle", steps=LONG * 3)
    await first_progress(rig, ticket.job.job_id)
    assert await rig.queue.cancel(ticket.job.job_id, by=42)
    result = await outcome(ticket, timeout=30)
    assert isinstance(result, Failure) and result.kind is FailureKind.CANCELLED
    assert (await rig.store.get_job(ticket.job.job_id)).cancelled_by == 42
    # The worker is free again: the next job runs.
    assert isinstance(await outcome(await rig.submit("after the cancel")), GenerateResult)


async def test_a_job_in_flight_survives_a_nats_server_restart(rig: Rig, server) -> None:
    """Both sides reconnect by themselves; the lease outlives a short outage; the result is taken once."""
    ticket = await rig.submit("a yellow circle", steps=LONG)
    await first_progress(rig, ticket.job.job_id)
    lease = (await rig.store.get_job(ticket.job.job_id)).lease
    await asyncio.to_thread(server.restart, 0.5)
    before = len(rig.progress[ticket.job.job_id])
    result = await outcome(ticket)
    assert isinstance(result, GenerateResult)
    assert len(rig.progress[ticket.job.job_id]) > before  # it was in flight across the restart
    row = await rig.store.get_job(ticket.job.job_id)
    assert row.lease == lease and ticket.attempts == 1  # the same hand-out, not a retry
    assert isinstance(await outcome(await rig.submit("after the restart")), GenerateResult)


async def test_results_a_worker_holds_while_the_bot_is_away_are_collected_at_its_start(server, crew, tmp_path) -> None:
    """The bot dies mid-job: the worker keeps the result; the next start collects it before anything
    is queued again, so the job is not run twice."""
    first = await Rig(tmp_path, server).start()
    await first.wait_for_workers(len(crew))
    ticket = await first.submit("a purple square", steps=LONG)
    job_id = ticket.job.job_id
    await first_progress(first, job_id)
    await first.crash()  # as if killed: the row stays running, under its lease
    row = await first_store_row(tmp_path, job_id)
    assert row.status == "running" and row.lease

    collected: list = []

    async def keep(job: int, result: GenerateResult) -> None:
        collected.append((job, result))
        await second.queue.collected(job, result)

    await held_by_a_worker(server, row.lease)  # it finished meanwhile, and found no bot to take its result
    second = Rig(tmp_path, server)
    await second.start(collect=keep)
    try:
        assert [job for job, _ in collected] == [job_id]
        assert collected[0][1].images[0].data[:4] == b"\x89PNG"
        assert (await second.store.get_job(job_id)).status == "delivering"
    finally:
        await second.close()


async def test_a_job_running_through_a_graceful_restart_is_taken_from_its_worker(server, crew, tmp_path) -> None:
    """The bot stops (SIGTERM) while a worker runs a job longer than the grace: the job waits in the
    store, the worker is not told to drop it, and the next run, which queued it again, takes its
    result when it comes rather than running it again (`JobQueue.adopt`)."""
    first = await Rig(tmp_path, server).start()
    await first.wait_for_workers(len(crew))
    ticket = await first.submit("a teal circle", steps=LONG * 4)
    job_id = ticket.job.job_id
    await first_progress(first, job_id)
    await first.close(grace=0)  # what did not finish goes back to queued, under its lease
    row = await first_store_row(tmp_path, job_id)
    assert row.status == "queued" and row.lease

    second = await Rig(tmp_path, server).start()
    try:
        blocker = await second.submit("the other worker's job", steps=LONG * 6)  # the free worker takes this
        await first_progress(second, blocker.job.job_id)
        again = second.queue.submit(Job(job_id, row.request), row.user_id, check=False)  # as restore does
        result = await outcome(again)
        assert isinstance(result, GenerateResult)
        after = await second.store.get_job(job_id)
        assert after.lease == row.lease and after.status == "delivering"  # the first hand-out's result
        assert isinstance(await outcome(blocker), GenerateResult)
    finally:
        await second.close()


async def test_a_status_naming_another_workers_lease_cannot_stop_its_job(rig: Rig, server) -> None:
    """Security: a client with the workers' password that learns a live lease and claims it in a
    status of its own gets the job neither voided nor acknowledged."""
    ticket = await rig.submit("a steady square", steps=LONG)
    await first_progress(rig, ticket.job.job_id)
    lease = (await rig.store.get_job(ticket.job.job_id)).lease
    rogue = await nats.connect(server.url)
    try:
        status = WorkerStatus(session="rogue", name="rogue", device="cpu", model="tiny", dtype="float32",
                              safety_checker="opennsfw", protocol=wire.PROTOCOL_VERSION, lease=lease)
        for _ in range(3):
            await rogue.publish(relay.EVENT, status.encode(), headers={relay.WORKER: "rogue", relay.KIND: "status"})
        await rogue.flush()
    finally:
        await rogue.close()
    assert isinstance(await outcome(ticket), GenerateResult)
    assert "rogue" not in {worker.name for worker in rig.hub.workers.values()}  # a status alone does not join


async def test_a_worker_that_joins_late_gets_work(rig: Rig, crew, server, tiny_model, tmp_path) -> None:
    """Workers may come at any time: a third one joins while jobs wait, and takes some."""
    late = await WorkerProcess("w3", server.url, tmp_path, tiny_model).start()
    tickets = []
    try:
        deadline = time.monotonic() + 90
        while len(rig.hub.workers) < 3:  # jobs keep coming until it is there: some wait when it joins
            assert time.monotonic() < deadline, late.log()
            while len(rig.queue.queued()) < 6:
                tickets.append(await rig.submit(f"a late circle {len(tickets)}", user=len(tickets) % 4, steps=40))
            await asyncio.sleep(0.05)
        for ticket in tickets:
            assert isinstance(await outcome(ticket), GenerateResult)
        workers = {(await rig.store.get_job(t.job.job_id)).worker for t in tickets}
        assert "w3" in workers
    finally:
        assert await late.stop() == 0
    # It said it stopped: gone at once, not lost after a lease of silence.
    deadline = time.monotonic() + 5
    while any(w.name == "w3" for w in rig.hub.workers.values()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_failed_job_on_a_worker_fails_the_same_way_as_here(rig: Rig) -> None:
    """A worker's engine answers bad requests as the local engine does (same code): an unknown model
    fails that job with the engine's words, and the worker carries on."""
    ticket = await rig.submit("a circle", model="no-such-model")
    result = await outcome(ticket)
    assert isinstance(result, Failure) and result.kind in (FailureKind.INVALID, FailureKind.INTERNAL)
    assert isinstance(await outcome(await rig.submit("a circle after")), GenerateResult)


async def first_store_row(tmp_path, job_id: int):
    store = await Store.open(tmp_path / "dreambot.sqlite3")
    try:
        return await store.get_job(job_id)
    finally:
        await store.close()


async def held_by_a_worker(server: NatsServer, lease: str, timeout: float = 60.0) -> None:
    """Until a worker says (in its status) that it keeps a result of `lease` for the bot."""
    listener = await nats.connect(server.url)
    held = asyncio.Event()

    async def status(msg) -> None:
        if (msg.headers or {}).get(relay.KIND) == "status" and lease in WorkerStatus.decode(msg.data).holding:
            held.set()

    try:
        await listener.subscribe(relay.EVENT, cb=status)
        await asyncio.wait_for(held.wait(), timeout)
    finally:
        await listener.close()


async def test_dream_through_the_bot_with_two_workers_one_killed_mid_job(server, crew, fake, tiny_model,
                                                                         tmp_path) -> None:
    """Done means: `python -m bot` with NATS_URL starts no engine of its own and serves /dream through
    the workers; a worker killed mid-job loses nothing (posted once, by the other); /mod workers lists
    them, and the mod-log says one was lost."""
    bot = BotProcess(fake, tmp_path / "bot", tiny_model, NATS_URL=server.url, WORKER_LEASE_SECONDS="3",
                     MAX_STEPS="500")
    await bot.start()
    try:
        deadline = time.monotonic() + 60
        while not all(f"worker {worker.name} joined" in bot.log() for worker in crew.values()):
            assert time.monotonic() < deadline, bot.log()
            await asyncio.sleep(0.1)
        assert "engine process" not in bot.log()  # no engine on the bot's host
        modlog = fake.text_channel("mod-log")
        await fake.invoke("mod modlog", fake.owner, channel=modlog)
        admin = fake.user("admin", permissions=MANAGE_GUILD)
        listed = (await (await fake.invoke("mod workers", admin)).wait_for(lambda r: bool(r.content))).content
        assert all(f"`{worker.name}`" in listed for worker in crew.values()) and "idle" in listed

        interaction = await fake.invoke("dream", prompt="a red fox", steps=500, seed=3)
        deadline = time.monotonic() + 30
        while not (job := (bot.jobs("interaction_id = ?", interaction.id) or [{}])[0]).get("worker"):
            assert time.monotonic() < deadline, "no worker took the job"
            await asyncio.sleep(0.02)
        doomed = job["worker"]
        killer(crew, doomed).kill()
        await replace(crew, doomed, server, tiny_model)
        await interaction.wait_for(lambda reply: reply.kind == "edit" and bool(reply.files), timeout=90)
        await asyncio.sleep(0.5)
        assert sum(1 for reply in interaction.replies if reply.files) == 1  # posted once
        [job] = bot.jobs("interaction_id = ?", interaction.id)
        assert job["status"] == "done" and job["worker"] != doomed
        told = await fake.messages_in(modlog).wait_for(lambda reply: "was lost" in reply.content)
        assert f"`{doomed}`" in told.content
    finally:
        await bot.stop()
