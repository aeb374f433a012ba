"""deploy/nats-server.conf, the example NATS server for several hosts, on the real nats-server: the
bot's user and the workers' user can do all that their side of `dreambot.relay` does (a whole job,
with the bot's real WorkerHub and the worker's real NATS side, passes without one refusal), and no
more: a worker cannot hear what other workers send nor speak as the bot, and strangers are refused.

What a refusal looks like (found with nats-server 2.15 and nats-py 2.16): the server drops the
subscription or the message, logs a "Subscription Violation" or "Publish Violation", and sends
-ERR; nats-py passes it to `error_cb` as a `nats.errors.Error` whose text starts "nats: permissions
violation for" and keeps the connection. A refused login fails `nats.connect` with
`nats.errors.Error("nats: 'Authorization Violation'")`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import nats
import nats.errors
import pytest

from dreambot import relay
from dreambot.settings import WorkerSettings
from dreambot.wire import PROTOCOL_VERSION, GenerateResult, ImageResult, Progress, Ready
from engine.worker import Worker
from tests.support.nats import NatsServer
from tests.support.workers import Rig, outcome

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nats-server.conf"
PASSWORDS = {"dreambot": "bot0test0password", "worker": "worker0test0password"}
WAIT = 5.0  # seconds a message that should arrive may take (a loaded CI host)
QUIET = 0.5  # seconds to wait for a message that should not arrive


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """nats-server with the example file as it is (TLS is left commented out there), its passwords
    from the variables it names."""
    monkeypatch.setenv("DREAMBOT_NATS_PASSWORD", PASSWORDS["dreambot"])
    monkeypatch.setenv("WORKER_NATS_PASSWORD", PASSWORDS["worker"])
    running = NatsServer(tmp_path, config=CONFIG).start()
    yield running
    running.stop()


def url(server: NatsServer, user: str, password: str | None = None) -> str:
    return f"nats://{user}:{password or PASSWORDS[user]}@127.0.0.1:{server.port}"


class Client:
    """A connection as one user, with the errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.nc: nats.aio.client.Client | None = None

    @classmethod
    async def of(cls, server: NatsServer, user: str) -> Client:
        client = cls()

        async def heard(error: Exception) -> None:
            client.errors.append(error)

        client.nc = await nats.connect(url(server, user), error_cb=heard, allow_reconnect=False)
        return client

    async def refused(self, text: str) -> Exception:
        """The permissions violation the server sent about `text` (a subject), once it comes."""
        for _ in range(int(WAIT / 0.02)):
            for error in self.errors:
                if text in str(error):
                    return error
            await asyncio.sleep(0.02)
        raise AssertionError(f"no refusal about {text}: {self.errors}")


async def settle(*connections) -> None:
    """Each connection's subscriptions are in place at the server. nats-py's flush() writes its PING
    ahead of the commands still queued (a SUB just made), so one flush may come back before the SUB
    is there; the second PING goes after them."""
    for nc in connections:
        await nc.flush()
        await nc.flush()


async def silent(subscription) -> bool:
    """Whether nothing arrives on `subscription` for a while."""
    try:
        await subscription.next_msg(timeout=QUIET)
    except nats.errors.TimeoutError:
        return True
    return False


def test_the_server_will_not_start_without_its_passwords() -> None:
    """A password variable left unset stops nats-server at start: the file never opens a user
    without a password."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NATS_PASSWORD")}
    done = subprocess.run(["nats-server", "-c", str(CONFIG), "-t"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode != 0
    assert "DREAMBOT_NATS_PASSWORD" in done.stderr + done.stdout
    env.update(DREAMBOT_NATS_PASSWORD="a1", WORKER_NATS_PASSWORD="b2")
    assert subprocess.run(["nats-server", "-c", str(CONFIG), "-t"], env=env, capture_output=True,
                          timeout=30).returncode == 0


async def test_a_job_runs_under_the_two_users_without_one_refusal(server: NatsServer, tmp_path: Path) -> None:
    """The bot's WorkerHub and a worker's real NATS side (`engine.worker.Worker`, with a stand-in
    engine) each as its user: a pull, a lease, progress, a result too big for one message (so the
    parts), and the bot's answers all get through, and the server logs no violation."""

    picture = os.urandom(1_500_000)  # over the server's 1 MB: sent in parts

    settings = WorkerSettings(_env_file=None, nats_url=url(server, "worker"), worker_name="gpu-test")
    ready = Ready(model="tiny", device="cpu", dtype="float32", safety_checker="opennsfw", protocol=PROTOCOL_VERSION)
    worker = Worker(settings, "gpu-test", ready, ("tiny",))

    def engine() -> None:  # stands in for run_jobs: one step, then the picture
        while (jobs := worker.work.get()) is not None:
            for job in jobs:
                worker.from_engine(Progress(job_id=job.job_id, step=1, total=1))
                image = ImageResult(data=picture, seed=7, nsfw_content_detected=False, nsfw_score=0.0)
                worker.from_engine(GenerateResult(job_id=job.job_id, images=(image,), seed=7, width=64, height=64,
                                                  model="tiny"))

    threading.Thread(target=engine, daemon=True).start()
    as_bot = SimpleNamespace(url=url(server, "dreambot"))  # the server as the Rig's bot reaches it
    rig = await Rig(tmp_path, as_bot).start()  # type: ignore[arg-type]
    serving = asyncio.create_task(worker.main())
    try:
        ticket = await rig.submit("a red fox")
        result = await outcome(ticket, timeout=20)
        assert isinstance(result, GenerateResult), result
        assert result.images[0].data == picture
        assert [p.step for p in rig.progress[ticket.job.job_id]] == [1]
        row = await rig.store.get_job(ticket.job.job_id)  # type: ignore[union-attr]
        assert row is not None and row.lease  # handed out under a lease
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 30)
        worker.work.put(None)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await rig.close()
    assert "Violation" not in server.log(), server.log()


async def test_each_side_can_do_what_relay_does(server: NatsServer) -> None:
    """The worker's requests on WORK, FETCH and RESULT are answered by the bot (on the reply
    subject, which only a request opens to it); its EVENTs reach the bot; the bot's CONTROL
    reaches every worker."""
    bot, worker, other = [await Client.of(server, user) for user in ("dreambot", "worker", "worker")]
    heard: list[bytes] = []

    async def answer(msg) -> None:
        await msg.respond(b"answer to " + msg.data)

    async def event(msg) -> None:
        heard.append(msg.data)

    for subject in (relay.WORK, relay.FETCH, relay.RESULT):
        await bot.nc.subscribe(subject, cb=answer)
    await bot.nc.subscribe(relay.EVENT, cb=event)
    await settle(bot.nc)
    for subject in (relay.WORK, relay.FETCH, relay.RESULT):
        reply = await worker.nc.request(subject, subject.encode(), timeout=WAIT, headers={relay.WORKER: "w"})
        assert reply.data == b"answer to " + subject.encode()
    await worker.nc.publish(relay.EVENT, b"alive", headers={relay.KIND: "status"})
    controls = [await client.nc.subscribe(relay.CONTROL) for client in (worker, other)]
    await settle(worker.nc, other.nc)
    await bot.nc.publish(relay.CONTROL, b'{"type":"roll-call"}')
    for control in controls:
        assert (await control.next_msg(timeout=WAIT)).data == b'{"type":"roll-call"}'
    for _ in range(int(WAIT / 0.02)):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert heard == [b"alive"]
    assert bot.errors == worker.errors == other.errors == []
    for client in (bot, worker, other):
        await client.nc.close()


async def test_a_worker_cannot_hear_other_workers_nor_speak_as_the_bot(server: NatsServer) -> None:
    """A worker's subscriptions to WORK, FETCH, RESULT and EVENT are refused (it would read the
    prompts and pictures of jobs that are not its own), and so is its publishing on CONTROL (it
    would cancel or void other workers' jobs): the server drops them, says so, and the connection
    stays up."""
    snoop, worker = await Client.of(server, "worker"), await Client.of(server, "worker")
    stolen = [await snoop.nc.subscribe(subject) for subject in (relay.WORK, relay.FETCH, relay.RESULT, relay.EVENT)]
    for subject in (relay.WORK, relay.FETCH, relay.RESULT, relay.EVENT):
        error = await snoop.refused(f'subscription to "{subject}"')
        assert type(error) is nats.errors.Error and str(error).startswith("nats: permissions violation for")
    for subject in (relay.RESULT, relay.EVENT):
        await worker.nc.publish(subject, b"a picture")
    assert all(await asyncio.gather(*(silent(subscription) for subscription in stolen)))

    control = await worker.nc.subscribe(relay.CONTROL)
    await settle(worker.nc)
    await snoop.nc.publish(relay.CONTROL, b'{"type":"void","lease":"x"}')
    error = await snoop.refused(f'publish to "{relay.CONTROL}"')
    assert type(error) is nats.errors.Error
    assert await silent(control)
    assert snoop.nc.is_connected and worker.errors == []
    assert "Subscription Violation" in server.log() and "Publish Violation" in server.log()
    await snoop.nc.close()
    await worker.nc.close()


async def test_the_bot_answers_only_requests_and_only_once(server: NatsServer) -> None:
    """The bot writes into a worker's inbox only to answer that worker's request, once; it cannot
    put words in a worker's mouth on the workers' subjects either."""
    bot, worker = await Client.of(server, "dreambot"), await Client.of(server, "worker")
    inbox = await worker.nc.subscribe("_INBOX.test.*")
    await settle(worker.nc)
    await bot.nc.publish("_INBOX.test.1", b"an unasked job")
    await bot.refused('publish to "_inbox.test.1"')  # nats-py lower-cases the server's text
    assert await silent(inbox)

    async def answer_twice(msg) -> None:
        await bot.nc.publish(msg.reply, b"first")
        await bot.nc.publish(msg.reply, b"second")

    await bot.nc.subscribe(relay.WORK, cb=answer_twice)
    await settle(bot.nc)
    await worker.nc.publish(relay.WORK, b"", reply="_INBOX.test.2")
    assert (await inbox.next_msg(timeout=WAIT)).data == b"first"
    assert await silent(inbox)

    for subject in (relay.WORK, relay.RESULT, relay.EVENT):
        await bot.nc.publish(subject, b"forged")
        await bot.refused(f'publish to "{subject}"')
    await bot.nc.close()
    await worker.nc.close()


@pytest.mark.parametrize("user, password", [(None, None), ("worker", "wrong"), ("dreambot", PASSWORDS["worker"])])
async def test_strangers_are_refused(server: NatsServer, user: str | None, password: str | None) -> None:
    """No user, a wrong password, or one user's password for the other: the connection is refused."""

    async def quiet(error: Exception) -> None:
        pass

    address = server.url if user is None else url(server, user, password)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(address, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=WAIT,
                           error_cb=quiet)

