"""Configuration, read once from the environment into a ``Settings`` object.

``STAGEFLOW_*`` names, with the seed documents' names accepted too
(``DATABASE_URL``, ``MAX_PARALLEL_TASKS``, ``TASK_TIMEOUT``, ``MAX_RETRIES``,
``LOG_LEVEL``, ``MAX_CONCURRENT_RUNS``, ``API_HOST``, ``API_PORT``). The
``STAGEFLOW_`` name wins when both are set. With nothing set, state lives in
``./.stageflow/`` (SQLite + artifacts).

Prices for ``stageflow runs cost`` (``runtime.usage``) come from
``STAGEFLOW_COST="cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5"``: a price
per CPU hour, per GB-hour of memory and per GPU hour held; an item left out
costs nothing, and no variable at all means "no prices configured".

Every number is checked against ``NUMBER_RANGES``: a value that is not a finite
number (``nan``, ``inf``), is negative or is over its maximum is refused with a
``UsageError`` naming the variable, never silently used (``nan`` compares false
with everything, so it would turn a bound off). Empty means the default.

The capacity overrides that ``runtime.resources.detect_capacity`` applies
(``CAPACITY_NUMBERS``, with their seed names, and ``CAPACITY_COUNTS``) are
checked here too, so a bad one fails every command, not only a run whose tasks
declare resources. Only the text is parsed: no hardware is detected here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.errors import UsageError
from stageflow.spec.load import Limits

__all__ = [
    "CAPACITY_COUNTS",
    "CAPACITY_NUMBERS",
    "COST_PRICE_NAMES",
    "NUMBER_RANGES",
    "Settings",
    "capacity_number",
    "check_capacity",
    "load_settings",
    "parse_counts",
]

#: The prices ``STAGEFLOW_COST`` may set, per hour of one unit held.
COST_PRICE_NAMES = ("cpu_hour", "memory_gb_hour", "gpu_hour")

#: Each numeric variable (after ``STAGEFLOW_``): its type and its largest value.
NUMBER_RANGES: dict[str, tuple[type[int] | type[float], float]] = {
    "MAX_SPEC_BYTES": (int, 1 << 40),
    "MAX_SPEC_DEPTH": (int, 1000),  # past that, the parsers' recursion gives out first
    "MAX_SPEC_ALIASES": (int, 10**9),
    "MAX_SPEC_NODES": (int, 10**9),
    "MAX_TASKS": (int, 10**7),
    "TASK_TIMEOUT": (float, 365 * 24 * 3600),  # seconds: a year
    "MAX_RETRIES": (int, 1000),  # as retry.max_retries in a spec
    "MAX_PARALLEL_TASKS": (int, 100_000),  # as max_parallel_tasks in a spec
    "MAX_CONCURRENT_RUNS": (int, 100_000),
    "INLINE_OUTPUT_BYTES": (int, 1 << 29),  # SQLite stores at most 1e9 bytes in a value
    "COMMIT_INTERVAL_MS": (float, 60_000),  # a minute: longer loses more to a crash
    "LEASE_SECONDS": (float, 3600),  # an hour: longer leaves a dead owner's run longer
    "API_PORT": (int, 65535),
    "API_FAILED_LOGINS_PER_MINUTE": (int, 1_000_000),
    "SAMPLING_INTERVAL_SECONDS": (float, 86400),  # the monitor's (runtime.monitor): a day
    "METRICS_RETENTION_HOURS": (float, 10 * 366 * 24),  # ten years of samples
    "NOTIFY_TRIES": (int, 100),  # tries of one notification delivery (runtime.notify)
    "NOTIFY_BACKOFF_SECONDS": (float, 3600),  # before the 2nd try; x4 each next one
    "NOTIFY_WAIT_SECONDS": (float, 3600),  # a process's wait at exit for its deliveries
}
#: The shortest lease ``STAGEFLOW_LEASE_SECONDS`` may set.
MIN_LEASE_SECONDS = 2.0

#: Capacity overrides: a number each, as ``STAGEFLOW_<NAME>`` or the seed's ``<NAME>``.
CAPACITY_NUMBERS = ("MAX_CPU_CORES", "MAX_MEMORY_GB", "MAX_GPU_COUNT")
#: Capacity overrides holding ``NAME=AMOUNT`` items (pools, custom resources).
CAPACITY_COUNTS = ("STAGEFLOW_POOLS", "STAGEFLOW_CUSTOM_RESOURCES")


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path = Path(".stageflow")
    database_url: str | None = None
    artifacts_url: str | None = None
    max_parallel_tasks: int = 0  # 0: the machine's CPU count
    max_concurrent_runs: int = 4
    task_timeout: float | None = None
    max_retries: int | None = None
    log_level: str = "WARNING"
    inline_output_bytes: int = 64 * 1024
    commit_interval: float = 0.01  # seconds a state change may wait for its group commit
    # Seconds a run's lease lasts (engine.lease; renewed every third of it); None:
    # engine.lease.DEFAULT_LEASE_SECONDS.
    lease_seconds: float | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # Where files named in specs saved over the API by non-admins may be
    # (STAGEFLOW_API_DATA_ROOTS, os.pathsep-separated; empty: <home>/data).
    api_data_roots: tuple[str, ...] = ()
    # The hosts (``host`` or ``host:port``, exact) a non-admin's spec may reach over the
    # API although they are not public (STAGEFLOW_API_ALLOWED_HOSTS, comma-separated).
    api_allowed_hosts: tuple[str, ...] = ()
    # The CLI's commands that read or control runs talk to this server instead of the
    # store (STAGEFLOW_SERVER, or --server), with this token (STAGEFLOW_TOKEN).
    server_url: str | None = None
    server_token: str | None = field(default=None, repr=False)
    # Failed authentications a client address may make in a minute before the API
    # answers it 429 (STAGEFLOW_API_FAILED_LOGINS_PER_MINUTE).
    api_failed_logins_per_minute: int = 10
    limits: Limits = field(default_factory=Limits)
    tracking: bool = False  # each run is an MLflow run (`--track`, STAGEFLOW_TRACKING=1)
    mlflow_tracking_uri: str | None = None  # None: sqlite:///<home>/mlflow.db
    # Price per hour of a unit held, by name in COST_PRICE_NAMES (STAGEFLOW_COST);
    # empty: no prices configured.
    cost_prices: dict[str, float] = field(default_factory=dict)
    # The monitor (runtime.monitor): seconds between two samples of the host and store
    # gauges (STAGEFLOW_SAMPLING_INTERVAL_SECONDS), hours a sample is kept
    # (STAGEFLOW_METRICS_RETENTION_HOURS); 0 or empty: the default.
    sampling_interval_seconds: float = 15.0
    metrics_retention_hours: float = 168.0
    # Notifications (runtime.notify): the SMTP server of email channels
    # (STAGEFLOW_SMTP_URL, smtp[s]://[user[:${secret:NAME}]@]host[:port]) and the sender
    # (STAGEFLOW_SMTP_FROM); the base of a message's link (STAGEFLOW_PUBLIC_URL); tries
    # per delivery, the first retry's delay (then x4), and how long a process waits at
    # exit for its deliveries (the rest are the background duty's).
    smtp_url: str | None = field(default=None, repr=False)
    smtp_from: str | None = None
    public_url: str | None = None
    notify_tries: int = 4
    notify_backoff: float = 1.0
    notify_wait: float = 10.0

    @property
    def artifacts_root(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def parallelism(self) -> int:
        return self.max_parallel_tasks or os.cpu_count() or 1


def allowed_hosts(raw: str | None) -> tuple[str, ...]:
    """``STAGEFLOW_API_ALLOWED_HOSTS``'s entries (comma-separated): ``host``,
    ``host:port``, ``[v6]:port`` or a bare IPv6 address; ``UsageError`` names an entry
    that is none of them (a bad port, a path, a scheme), which would never match."""
    out: list[str] = []
    for entry in (e.strip() for e in (raw or "").split(",")):
        if not entry:
            continue
        if not _ALLOWED_HOST.fullmatch(entry):
            raise UsageError(
                f"STAGEFLOW_API_ALLOWED_HOSTS: {entry!r} is not a host; give host names or "
                "IPs, each with an optional port (data.example.com, 10.0.0.5:8080, "
                "[fd00::5]:443), separated by commas"
            )
        port = entry.rsplit(":", 1)[1] if entry.count(":") == 1 or "]:" in entry else None
        if port is not None and not 1 <= int(port) <= 65535:
            raise UsageError(
                f"STAGEFLOW_API_ALLOWED_HOSTS: {entry!r} has port {port}; a port is 1 to 65535"
            )
        out.append(entry)
    return tuple(out)


#: A host name or IPv4 with an optional port, ``[v6]`` with an optional port, a bare IPv6.
_ALLOWED_HOST = re.compile(
    r"[A-Za-z0-9_.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (default ``os.environ``); ``UsageError`` names a bad variable."""
    env = os.environ if env is None else env

    def get(name: str, seed: str | None = None) -> str | None:
        value = env.get(f"STAGEFLOW_{name}")
        if value is None and seed is not None:
            value = env.get(seed)
        return value if value not in (None, "") else None

    def number(name: str, seed: str | None, kind: type[int] | type[float]) -> float | None:
        raw = get(name, seed)
        if raw is None:
            return None
        _, highest = NUMBER_RANGES[name]
        shown = f"STAGEFLOW_{name}" + (f" (or {seed})" if seed else "")
        try:
            value = kind(raw)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise UsageError(f"{shown} is {raw!r}; it must be {what}") from None
        if not math.isfinite(value):
            raise UsageError(f"{shown} is {raw!r}; it must be a finite number")
        if value < 0:
            raise UsageError(f"{shown} is {raw!r}; it must not be negative")
        if value > highest:
            raise UsageError(f"{shown} is {raw!r}; it must be at most {highest:,}")
        return value

    # Here, where every command starts: detect_capacity reads them again when a run
    # admits tasks (by then --cpus/--memory-gb/--gpus may have set them).
    check_capacity(env)
    defaults = Settings()
    limits = Limits(
        max_bytes=int(number("MAX_SPEC_BYTES", None, int) or defaults.limits.max_bytes),
        max_depth=int(number("MAX_SPEC_DEPTH", None, int) or defaults.limits.max_depth),
        max_aliases=int(number("MAX_SPEC_ALIASES", None, int) or defaults.limits.max_aliases),
        max_nodes=int(number("MAX_SPEC_NODES", None, int) or defaults.limits.max_nodes),
        max_tasks=int(number("MAX_TASKS", None, int) or defaults.limits.max_tasks),
    )
    timeout = number("TASK_TIMEOUT", "TASK_TIMEOUT", float)
    lease = number("LEASE_SECONDS", None, float) or None  # 0: the default, as elsewhere
    if lease is not None and lease < MIN_LEASE_SECONDS:
        raise UsageError(
            f"STAGEFLOW_LEASE_SECONDS is {get('LEASE_SECONDS')!r}; it must be at least "
            f"{MIN_LEASE_SECONDS:g} (a lease is renewed every third of it)"
        )
    retries = number("MAX_RETRIES", "MAX_RETRIES", int)
    return Settings(
        home=Path(get("HOME") or ".stageflow"),
        database_url=get("DATABASE_URL", "DATABASE_URL"),
        artifacts_url=get("ARTIFACTS_URL"),
        max_parallel_tasks=int(number("MAX_PARALLEL_TASKS", "MAX_PARALLEL_TASKS", int) or 0),
        max_concurrent_runs=int(number("MAX_CONCURRENT_RUNS", "MAX_CONCURRENT_RUNS", int) or 4),
        task_timeout=timeout or None,
        max_retries=int(retries) if retries is not None else None,
        log_level=(get("LOG_LEVEL", "LOG_LEVEL") or "WARNING").upper(),
        inline_output_bytes=int(number("INLINE_OUTPUT_BYTES", None, int) or 64 * 1024),
        commit_interval=(number("COMMIT_INTERVAL_MS", None, float) or 10.0) / 1000.0,
        lease_seconds=lease,
        api_host=get("API_HOST", "API_HOST") or "127.0.0.1",
        api_port=int(number("API_PORT", "API_PORT", int) or 8080),
        api_failed_logins_per_minute=int(number("API_FAILED_LOGINS_PER_MINUTE", None, int) or 10),
        server_url=get("SERVER"),
        server_token=get("TOKEN"),
        api_data_roots=tuple(
            r for r in (get("API_DATA_ROOTS") or "").split(os.pathsep) if r.strip()
        ),
        api_allowed_hosts=allowed_hosts(get("API_ALLOWED_HOSTS")),
        tracking=(get("TRACKING") or "").lower() in ("1", "true", "yes", "on"),
        mlflow_tracking_uri=get("MLFLOW_TRACKING_URI"),
        limits=limits,
        cost_prices=_cost_prices(get("COST")),
        sampling_interval_seconds=number("SAMPLING_INTERVAL_SECONDS", None, float) or 15.0,
        metrics_retention_hours=number("METRICS_RETENTION_HOURS", None, float) or 168.0,
        smtp_url=get("SMTP_URL"),
        smtp_from=get("SMTP_FROM"),
        public_url=get("PUBLIC_URL"),
        notify_tries=int(number("NOTIFY_TRIES", None, int) or 4),
        notify_backoff=_or_default(number("NOTIFY_BACKOFF_SECONDS", None, float), 1.0),
        notify_wait=_or_default(number("NOTIFY_WAIT_SECONDS", None, float), 10.0),
    )


def check_capacity(env: Mapping[str, str]) -> None:
    """Raise ``UsageError`` naming the first capacity variable in ``env`` that is bad."""
    for name in CAPACITY_NUMBERS:
        capacity_number(name, env)
    for variable in CAPACITY_COUNTS:
        parse_counts(env.get(variable, ""), variable)


def capacity_number(name: str, env: Mapping[str, str]) -> float | None:
    """The capacity override ``STAGEFLOW_<name>`` (else the seed's ``<name>``) in ``env``;
    ``None`` when unset or empty. ``UsageError`` names the variable of a value that is
    not a finite number >= 0 (``nan`` would admit anything, ``inf`` everything)."""
    raw = env.get(f"STAGEFLOW_{name}") or env.get(name)
    if raw in (None, ""):
        return None
    shown = f"STAGEFLOW_{name}" if env.get(f"STAGEFLOW_{name}") else name
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{shown} is {raw!r}; it must be a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{shown} is {raw!r}; it must be a finite number")
    if value < 0:
        raise UsageError(f"{shown} is {raw!r}; it must not be negative")
    return value


def parse_counts(text: str, variable: str) -> dict[str, float]:
    """``"a=2,b=0.5"`` -> ``{"a": 2.0, "b": 0.5}``; ``UsageError`` names a bad item."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name.strip() or not (math.isfinite(amount) and amount >= 0):
            raise UsageError(f"{variable}: {item!r} is not NAME=AMOUNT (e.g. training=2)")
        out[name.strip()] = amount
    return out


def _cost_prices(raw: str | None) -> dict[str, float]:
    """``STAGEFLOW_COST`` parsed like ``parse_counts`` (``NAME=AMOUNT``,
    comma-separated, amounts >= 0): ``{"cpu_hour": 0.05, ...}``. ``UsageError``
    names a malformed item or an unknown price."""
    example = "e.g. STAGEFLOW_COST=cpu_hour=0.05,memory_gb_hour=0.01,gpu_hour=2.5"
    prices: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not name or not (math.isfinite(amount) and amount >= 0):
            raise UsageError(f"STAGEFLOW_COST: {item!r} is not PRICE=AMOUNT ({example})")
        if name not in COST_PRICE_NAMES:
            raise UsageError(
                f"STAGEFLOW_COST: unknown price {name!r}; the prices are "
                f"{', '.join(COST_PRICE_NAMES)} ({example})"
            )
        prices[name] = amount
    return prices


def _or_default(value: float | None, default: float) -> float:
    """``value`` when set (0 included: no delay, no wait), else ``default``."""
    return default if value is None else float(value)
