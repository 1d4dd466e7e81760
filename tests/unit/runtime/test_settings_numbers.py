"""Every numeric setting refuses what is not a finite number in its range.

``nan`` compares false with everything, so a ``nan`` that got through would turn
a bound off (``STAGEFLOW_COMMIT_INTERVAL_MS=nan``: no intermediate commits;
``STAGEFLOW_MAX_CPU_CORES=nan``: admit anything). Each variable is walked with
each bad value; the message names the variable. The capacity variables are
refused when the settings load, not only when a task declares resources. So is an
entry of ``STAGEFLOW_API_ALLOWED_HOSTS`` that is no host (it would never match one).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stageflow.errors import UsageError
from stageflow.runtime.resources import detect_capacity
from stageflow.runtime.settings import NUMBER_RANGES, load_settings

BAD_NUMBERS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-1", "1e400"]
SEED_NAMES = {
    "MAX_PARALLEL_TASKS",
    "MAX_CONCURRENT_RUNS",
    "TASK_TIMEOUT",
    "MAX_RETRIES",
    "API_PORT",
}


def _cases() -> list[object]:
    cases = []
    for name, (kind, highest) in NUMBER_RANGES.items():
        over = str(int(highest) + 1)
        for raw in [*BAD_NUMBERS, over]:
            cases.append(pytest.param(f"STAGEFLOW_{name}", raw, id=f"{name}={raw}"))
        if name in SEED_NAMES:
            cases.append(pytest.param(name, "nan", id=f"seed-{name}=nan"))
        if kind is int:
            cases.append(pytest.param(f"STAGEFLOW_{name}", "2.5", id=f"{name}=2.5"))
    return cases


@pytest.mark.parametrize(("variable", "raw"), _cases())
def test_a_bad_number_is_refused_naming_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(UsageError) as info:
        load_settings({variable: raw})
    message = str(info.value)
    assert message.startswith(f"STAGEFLOW_{variable.removeprefix('STAGEFLOW_')}")
    assert repr(raw) in message
    assert "; it must " in message


@pytest.mark.parametrize("name", list(NUMBER_RANGES))
def test_the_largest_value_and_zero_are_accepted(name: str) -> None:
    kind, highest = NUMBER_RANGES[name]
    load_settings({f"STAGEFLOW_{name}": str(kind(highest))})
    load_settings({f"STAGEFLOW_{name}": "0"})


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        pytest.param("STAGEFLOW_COMMIT_INTERVAL_MS", "60000", "commit_interval", 60.0, id="ms"),
        pytest.param("STAGEFLOW_COMMIT_INTERVAL_MS", "", "commit_interval", 0.01, id="empty"),
        pytest.param("STAGEFLOW_TASK_TIMEOUT", "2.5", "task_timeout", 2.5, id="timeout"),
        pytest.param("TASK_TIMEOUT", "0", "task_timeout", None, id="no-timeout"),
        pytest.param("STAGEFLOW_API_PORT", "65535", "api_port", 65535, id="port"),
        pytest.param("STAGEFLOW_MAX_RETRIES", "1000", "max_retries", 1000, id="retries"),
    ],
)
def test_a_good_number_is_used(variable: str, raw: str, field: str, expected: object) -> None:
    assert getattr(load_settings({variable: raw}), field) == expected


def _check_capacity(tmp_path: Path) -> dict[str, Callable[[dict[str, str]], object]]:
    """The two readers of the capacity variables: the settings every command loads
    (so a bad value fails even a run whose tasks declare no resources) and
    ``detect_capacity`` (what a run with resources admits against)."""
    return {
        "load_settings": load_settings,
        "detect_capacity": lambda env: detect_capacity(
            tmp_path, env={"PATH": "/nonexistent", **env}
        ),
    }


READERS = ["load_settings", "detect_capacity"]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("raw", [*BAD_NUMBERS, "many"])
@pytest.mark.parametrize("name", ["MAX_CPU_CORES", "MAX_MEMORY_GB", "MAX_GPU_COUNT"])
@pytest.mark.parametrize("prefix", ["STAGEFLOW_", ""], ids=["stageflow", "seed"])
def test_a_bad_capacity_is_refused_naming_its_variable(
    tmp_path: Path, prefix: str, name: str, raw: str, reader: str
) -> None:
    if raw == "1e400":
        raw = "1e999"  # float("1e400") is inf too; keep the id readable
    with pytest.raises(UsageError, match=f"^{prefix}{name} is {raw!r}; it must"):
        _check_capacity(tmp_path)[reader]({f"{prefix}{name}": raw})


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "many", ""])
@pytest.mark.parametrize("variable", ["STAGEFLOW_POOLS", "STAGEFLOW_CUSTOM_RESOURCES"])
def test_a_bad_count_is_refused_naming_its_variable(
    tmp_path: Path, variable: str, raw: str, reader: str
) -> None:
    with pytest.raises(UsageError, match=f"^{variable}: 'a={raw}' is not NAME=AMOUNT"):
        _check_capacity(tmp_path)[reader]({variable: f"a={raw}"})


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        pytest.param("STAGEFLOW_MAX_CPU_CORES", "2.5", id="cpus"),
        pytest.param("MAX_MEMORY_GB", "0", id="seed-memory-zero"),
        pytest.param("STAGEFLOW_MAX_GPU_COUNT", "8", id="gpus"),
        pytest.param("STAGEFLOW_MAX_CPU_CORES", "", id="empty-is-detected"),
        pytest.param("STAGEFLOW_POOLS", "training=2, etl=4", id="pools"),
        pytest.param("STAGEFLOW_CUSTOM_RESOURCES", "licenses=1.5,", id="custom"),
    ],
)
def test_a_good_capacity_is_accepted_at_settings_load(variable: str, raw: str) -> None:
    load_settings({variable: raw})


def test_settings_load_checks_capacity_without_detecting_hardware() -> None:
    """Every command loads the settings: parsing the capacity variables there must
    not cost `stageflow run` a hardware probe (psutil, nvidia-smi)."""
    code = (
        "import sys\n"
        "from stageflow.runtime.settings import load_settings\n"
        "load_settings({'STAGEFLOW_MAX_CPU_CORES': '2', 'MAX_GPU_COUNT': '1'})\n"
        "assert 'psutil' not in sys.modules, 'psutil imported'\n"
        "assert 'stageflow.runtime.resources' not in sys.modules, 'resources imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("", (), id="unset"),
        pytest.param("127.0.0.1", ("127.0.0.1",), id="an-ip"),
        pytest.param(
            " data.example.com:8080 , 10.0.0.5", ("data.example.com:8080", "10.0.0.5"), id="two"
        ),
        pytest.param("[fd00::5]:443,::1", ("[fd00::5]:443", "::1"), id="v6"),
    ],
)
def test_allowed_hosts_are_read(raw: str, expected: tuple[str, ...]) -> None:
    assert load_settings({"STAGEFLOW_API_ALLOWED_HOSTS": raw}).api_allowed_hosts == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param("http://x.example.com", "'http://x.example.com' is not a host", id="a-url"),
        pytest.param("x.example.com/path", "'x.example.com/path' is not a host", id="a-path"),
        pytest.param("host:abc", "'host:abc' is not a host", id="a-named-port"),
        pytest.param("ok.example.com,host:99999", "'host:99999' has port 99999", id="a-big-port"),
        pytest.param("host:0", "'host:0' has port 0", id="port-zero"),
    ],
)
def test_a_bad_allowed_host_is_refused_naming_the_variable(raw: str, why: str) -> None:
    """An entry that could never match a host would silently allow nothing."""
    with pytest.raises(UsageError) as caught:
        load_settings({"STAGEFLOW_API_ALLOWED_HOSTS": raw})
    assert str(caught.value).startswith(f"STAGEFLOW_API_ALLOWED_HOSTS: {why}")
