"""A three-member MongoDB replica set of our own `mongod`s; its primary steps down.

What a deployment past one machine runs, on one machine: every member electable, so
``step_down()`` (``replSetStepDown``) hands the primary to another member, as a rolling
upgrade or a lost primary would. Nothing here imports pytest, as in ``tests.services``.
"""

from __future__ import annotations

import atexit
import time
from dataclasses import dataclass
from typing import Any

from pymongo.errors import PyMongoError

from tests.services import MongoServer, poll_until, sync_client

REPLICA_SET = "rs3"
STEP_DOWN_SECONDS = 30
"""`replSetStepDown`'s value: how long the old primary may not stand again, unless it is
unfrozen (as `step_down()` does once another member took over)."""
CATCH_UP_SECONDS = 10
"""How long the primary waits for a secondary to catch up before it steps down."""


@dataclass(frozen=True)
class StepDown:
    """One ``replSetStepDown``: which member gave the primary up, which took it over."""

    old_primary: str
    new_primary: str
    seconds_to_new_primary: float
    operations_killed: int
    """Operations the old primary interrupted as it stepped down (writes in flight)."""
    operations_running: int
    """Operations it let run on (reads)."""


class MongoReplicaSet:
    """Three ``mongod``s (free ports, temp dirs) as one replica set, reaped on close.

    ``start()`` initiates the set and waits until a primary takes writes and every
    other member is a secondary; ``url`` names every member with ``replicaSet=``, as a
    worker of a real deployment is configured.
    """

    def __init__(self, *, members: int = 3, startup_timeout: float = 60.0) -> None:
        self._timeout = startup_timeout
        self._members = [
            MongoServer(
                startup_timeout=startup_timeout, replica_set=REPLICA_SET, initiate=False
            )
            for _ in range(members)
        ]

    def __enter__(self) -> MongoReplicaSet:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def hosts(self) -> list[str]:
        return [member.host for member in self._members]

    @property
    def url(self) -> str:
        return f"mongodb://{','.join(self.hosts)}/?replicaSet={REPLICA_SET}"

    def start(self) -> None:
        """Start every member, initiate the set, and wait until it is whole."""
        atexit.register(self.close)  # no stray mongod if the session is cut short
        try:
            for member in self._members:
                member.start()
            self._initiate()
            poll_until(f"replica set {self.hosts} whole", self._whole, self._timeout)
        except BaseException:
            self.close()
            raise

    def primary(self) -> str | None:
        """The member that takes writes now, if any (asked of each member)."""
        for host in self.hosts:
            if self._hello(host).get("isWritablePrimary"):
                return host
        return None

    def step_down(self, *, timeout: float = 60.0) -> StepDown:
        """``replSetStepDown`` on the primary; returns once another member took writes.

        The primary first waits (at most ``CATCH_UP_SECONDS``) for an electable
        secondary to catch up, then hands the election to it; once that one is
        primary, the old one may stand again (``replSetFreeze: 0``).
        """
        old = poll_until("a primary to step down", self.primary, timeout)
        began = time.monotonic()
        with sync_client(f"mongodb://{old}/", directConnection=True) as client:
            client.admin.command(
                "replSetStepDown",
                STEP_DOWN_SECONDS,
                secondaryCatchUpPeriodSecs=CATCH_UP_SECONDS,
            )

        def successor() -> str | None:
            primary = self.primary()
            return primary if primary not in (None, old) else None

        new = poll_until(f"a primary other than {old}", successor, timeout)
        seconds = round(time.monotonic() - began, 2)
        with sync_client(f"mongodb://{old}/", directConnection=True) as client:
            # Electable again at once: the next step-down, however soon, has two
            # members to hand the primary to.
            client.admin.command("replSetFreeze", 0)
            status = client.admin.command("serverStatus")
        ops = status["metrics"]["repl"]["stateTransition"]
        return StepDown(
            old,
            new,
            seconds,
            ops["userOperationsKilled"],
            ops["userOperationsRunning"],
        )

    def close(self) -> None:
        """Kill every member and delete its temp dir.

        SIGKILL, not SIGTERM: a member stopped cleanly waits out its quiesce period
        (15 s), and nobody will read these data files again.
        """
        for member in self._members:
            member.kill()
            member.close()
        atexit.unregister(self.close)

    def _initiate(self) -> None:
        config = {
            "_id": REPLICA_SET,
            "members": [
                {"_id": n, "host": host, "priority": 1}
                for n, host in enumerate(self.hosts)
            ],
        }
        first = self.hosts[0]
        with sync_client(f"mongodb://{first}/", directConnection=True) as client:
            client.admin.command("replSetInitiate", config)

    def _whole(self) -> bool | None:
        """A writable primary, and every other member a secondary."""
        states = [self._hello(host) for host in self.hosts]
        primaries = sum(bool(s.get("isWritablePrimary")) for s in states)
        secondaries = sum(bool(s.get("secondary")) for s in states)
        return (primaries == 1 and secondaries == len(states) - 1) or None

    def _hello(self, host: str) -> dict[str, Any]:
        """The member's answer to ``hello``; empty if it does not answer now."""
        try:
            with sync_client(f"mongodb://{host}/", directConnection=True) as client:
                answer: dict[str, Any] = client.admin.command("hello")
                return answer
        except PyMongoError:
            return {}
