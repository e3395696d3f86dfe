"""`Settings`: the only reader of the environment, read once by `__main__` and `cli`.

No prefix (`AMQP_URL`, `MONGODB_URL`, `FLOW_MODULES`), no `.env`. Durations accept plain
seconds (`SHUTDOWN_GRACE=20`) or ISO 8601; lists are comma-separated.
"""

import os
import socket
from datetime import timedelta
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _seconds(value: object) -> object:
    """Let operators write SHUTDOWN_GRACE=20 for 20 seconds; ISO 8601 still works."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        return float(value)
    return value


def _off(value: object) -> object:
    """An optional duration left empty, or written `none`/`off`, is no duration."""
    if isinstance(value, str) and value.strip().lower() in {"", "none", "off"}:
        return None
    return value


def _split(value: object) -> object:
    """`a.flows, b.flows` -> ("a.flows", "b.flows"); blanks between commas dropped."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Seconds = Annotated[timedelta, BeforeValidator(_seconds)]
"""A duration: plain seconds (`20`, `0.5`) or ISO 8601 (`PT20S`)."""
OptionalSeconds = Annotated[Seconds | None, BeforeValidator(_off)]
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]
"""A comma-separated list in the environment (`FLOW_MODULES=a.flows,b.flows`)."""

LogLevel = Annotated[
    Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)
]
OtelExporter = Annotated[Literal["otlp", "console", "none"], BeforeValidator(_lower)]
OtlpProtocol = Annotated[Literal["http/protobuf"], BeforeValidator(_lower)]

EXAMPLE_FLOWS = (
    "examples.hello",
    "examples.orders",
    "examples.branches",
    "examples.failures",
    "examples.batch",
    "examples.polling",
    "examples.approval",
    "examples.nightly",
    "examples.timeouts",
    "examples.declines",
    "examples.customers",
    "examples.invoices",
)

DELIVERY_LIMIT = 50
"""Why 50: only a crash loop reaches it. A transient failure is retried in place and a
shutdown requeues once, so 50 deliveries mean a message that kills its worker every
time; it is then parked in the dead-letter queue instead of cycling forever."""


def _worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Everything an operator can set, by environment variable (the upper-case name)."""

    model_config = SettingsConfigDict(frozen=True)

    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ URL (may hold a password).",
    )
    amqp_prefix: str = Field(
        "flow",
        min_length=1,
        description="Prefix of every exchange and queue name: `<prefix>.ingress`, ...",
    )
    amqp_prefetch: int = Field(
        64, ge=1, description="Unacked deliveries per queue the broker may send ahead."
    )
    amqp_concurrency: int = Field(
        32,
        ge=1,
        description=(
            "Messages handled at the same time by one worker; those that start runs "
            "(trigger, rerun) take at most a quarter of them."
        ),
    )
    amqp_delivery_limit: int = Field(
        DELIVERY_LIMIT,
        ge=1,
        description=(
            "Deliveries of one message before RabbitMQ dead-letters it: a backstop "
            "for a message that crashes its worker every time (transient failures "
            "are retried in place and never reach it). A live queue keeps the limit "
            "it was declared with; change it there with a policy."
        ),
    )
    max_message_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Larger message bodies are dead-lettered as `oversize`.",
    )
    mongodb_url: SecretStr = Field(
        SecretStr("mongodb://127.0.0.1:27017/"),
        description="MongoDB URL (may hold a password); a replica set, MongoDB 6.0+.",
    )
    mongodb_database: str = Field(
        "flow_orchestrator", min_length=1, description="MongoDB database name."
    )
    mongodb_write_concern: str = Field(
        "majority", min_length=1, description="Write concern `w` of every write."
    )
    mongodb_timeout: Seconds = Field(
        timedelta(seconds=10),
        description="Server selection and operation timeout of MongoDB calls.",
    )
    flow_modules: CommaList = Field(
        EXAMPLE_FLOWS,
        description=(
            "Comma-separated Python modules; each exposes `flows` and `handlers`."
        ),
    )
    health_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="Port of `/healthz`, `/readyz` and `/metrics`; 0 turns it off.",
    )
    log_level: LogLevel = Field("info", description="debug, info, warning or error.")
    log_json: bool = Field(
        default=True,
        description="JSON log lines; `false` for coloured console output.",
    )
    shutdown_grace: Seconds = Field(
        timedelta(seconds=20),
        description="On SIGTERM, how long in-flight messages may take to finish.",
    )
    scheduler_interval: Seconds = Field(
        timedelta(seconds=1),
        description="Pause between scheduler passes (timers, cron, reconciler).",
    )
    step_lease: Seconds = Field(
        timedelta(seconds=30),
        description=(
            "A step claim expires this long after its last heartbeat; a timer being "
            "fired by a worker that died is fired again after it."
        ),
    )
    step_heartbeat: Seconds = Field(
        timedelta(seconds=10),
        description="How often a running step renews its lease.",
    )
    step_ack_after: Seconds = Field(
        timedelta(minutes=10),
        description=(
            "A step still running after this long has its `run_step` delivery "
            "acknowledged at its next heartbeat (its row and lease carry it from "
            "there); keep it below the broker's consumer_timeout (30 min by default) "
            "minus one heartbeat."
        ),
    )
    step_timeout: OptionalSeconds = Field(
        None,
        description=(
            "How long one attempt of a handler step may run when neither the step nor "
            "its flow sets a timeout; empty means no limit."
        ),
    )
    step_timeout_grace: Seconds = Field(
        timedelta(seconds=5),
        description=(
            "Once a step's timeout passes, how long its handler has (`ctx.cancelled` "
            "is set) before its task is cancelled."
        ),
    )
    reconcile_after: Seconds = Field(
        timedelta(seconds=30),
        description=(
            "Age after which a dispatched, never-claimed step is re-published; "
            "the reconciler looks three times per this period."
        ),
    )
    retention: OptionalSeconds = Field(
        None,
        description="Delete runs completed longer ago than this; empty keeps them.",
    )
    retention_interval: Seconds = Field(
        timedelta(hours=1),
        description=(
            "With `RETENTION` set: how often each worker deletes expired runs, "
            "1,000 runs a sweep (with all they own); a full sweep is followed at "
            "once by the next, until one comes back short."
        ),
    )
    worker_id: str = Field(
        default_factory=_worker_id,
        min_length=1,
        description="This worker's name in leases and logs (default: hostname-pid).",
    )
    default_run_timeout: OptionalSeconds = Field(
        None,
        description="Deadline of runs whose flow sets none; empty means no deadline.",
    )
    gauge_interval: Seconds = Field(
        timedelta(seconds=15),
        description=(
            "How often the gauges that ask a server are refreshed: runs in progress "
            "(a MongoDB count) and queue depths and consumers (passive declares)."
        ),
    )
    otel_traces_exporter: OtelExporter | None = Field(
        None,
        description=(
            "OpenTelemetry's own variable: `otlp` (OTLP over HTTP) or `console` turns "
            "tracing on, `none` keeps it off. Needs the `otel` extra."
        ),
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description=(
            "OpenTelemetry's own variable (e.g. `http://jaeger:4318`): set, it turns "
            "tracing on with the OTLP exporter. Every other `OTEL_*` variable "
            "(service name, sampler, headers) is read by the SDK itself."
        ),
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None,
        description="OpenTelemetry's own variable: as the one above, for traces only.",
    )
    otel_exporter_otlp_protocol: OtlpProtocol | None = Field(
        None,
        description="OpenTelemetry's own variable: only `http/protobuf` is shipped.",
    )
    otel_sdk_disabled: bool = Field(
        default=False,
        description="OpenTelemetry's own variable: `true` keeps tracing off.",
    )

    @property
    def tracing(self) -> str | None:
        """The span exporter when the OTEL_* variables ask for tracing, else None."""
        if self.otel_sdk_disabled or self.otel_traces_exporter == "none":
            return None
        if self.otel_traces_exporter is not None:
            return self.otel_traces_exporter
        endpoints = (
            self.otel_exporter_otlp_endpoint,
            self.otel_exporter_otlp_traces_endpoint,
        )
        return "otlp" if any(endpoints) else None

    dashboard_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address `flowctl dashboard` listens on (`0.0.0.0` in containers).",
    )
    dashboard_port: int = Field(
        8081, ge=1, le=65535, description="Port of `flowctl dashboard`."
    )
    dashboard_users: SecretStr = Field(
        SecretStr(""),
        description=(
            "Who may sign in to the dashboard: `name:role:argon2-hash` entries "
            "separated by `;` or new lines, role `viewer` or `operator` (`flowctl "
            "dashboard-user NAME ROLE` prints one); the dashboard refuses to start "
            "without one."
        ),
    )
    dashboard_secret_key: SecretStr = Field(
        SecretStr(""),
        description=(
            "Signs the dashboard's session cookies (32+ random characters); empty: a "
            "random key per process, so sessions end when it restarts."
        ),
    )
    dashboard_session_ttl: Seconds = Field(
        timedelta(hours=8),
        description="How long a dashboard sign-in lasts.",
    )
    dashboard_secure_cookies: bool = Field(
        default=False,
        description="Send the session cookie over HTTPS only (set it behind TLS).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.scheduler_interval <= timedelta(0):
            raise ValueError("scheduler_interval must be positive")
        if self.retention_interval <= timedelta(0):
            raise ValueError("retention_interval must be positive")
        if not timedelta(0) < self.step_heartbeat < self.step_lease:
            raise ValueError("step_heartbeat must be positive and below step_lease")
        if self.step_ack_after <= timedelta(0):
            raise ValueError("step_ack_after must be positive")
        if self.step_timeout is not None and self.step_timeout <= timedelta(0):
            raise ValueError("step_timeout must be positive (or empty: no timeout)")
        if self.step_timeout_grace < timedelta(0):
            raise ValueError("step_timeout_grace must not be negative")
        return self


def settings_table() -> str:
    """The README's configuration table: variable, default and description."""
    rows = [
        "| Variable | Default | Description |",
        "| --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        default = _shown_default(name, info)
        rows.append(f"| `{name.upper()}` | {default} | {info.description or ''} |")
    return "\n".join(rows) + "\n"


def _shown_default(name: str, info: FieldInfo) -> str:
    if name == "worker_id":
        return "`<hostname>-<pid>`"
    value = info.get_default(call_default_factory=True)
    match value:
        case SecretStr() if not value.get_secret_value():
            return "(none)"
        case SecretStr():
            return f"`{_masked(value.get_secret_value())}`"
        case None:
            return "(none)"
        case timedelta():
            return f"`{value.total_seconds():g}` s"
        case tuple():
            return f"`{','.join(value)}`"
        case bool():
            return f"`{str(value).lower()}`"
        case _:
            return f"`{value}`"


def _masked(url: str) -> str:
    """The URL with its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))
