"""Loading spec text: good specs parse, hostile ones are refused with a message.

Every refusal is an ``InvalidSpec`` (never a traceback-worthy exception): empty,
binary, NUL bytes, not a mapping, bad syntax, YAML tags that would build
objects (never executed), alias bombs, absurd nesting, size and task limits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stageflow.errors import InvalidSpec, SpecLimitExceeded, StageflowError, UsageError
from stageflow.runtime.loading import load_pipeline
from stageflow.spec import Limits, parse_document, pipeline_from_data, pipeline_from_text
from stageflow.spec.load import Format

GOOD_YAML = """\
name: demo
description: a demo pipeline
owner: ml-team
params: {epochs: 3, dataset: iris}
defaults:
  retry: {max_retries: 1, delay_seconds: 2, backoff: exponential}
  timeout_seconds: 60
max_parallel_tasks: 4
failure_strategy: fail_fast
tasks:
  - id: ingest
    operator: bash
    parameters: {command: "echo ${params.dataset}"}
    priority: high
  - id: train
    call: "my_steps:train"
    upstream: [ingest]
    parameters: {epochs: "${params.epochs}"}
    resources: {cpu: 2, memory_gb: 1.5, gpu: 0}
    retry: {max_retries: 3, delay_seconds: 1, backoff: fixed}
    timeout_seconds: 30
    trigger_rule: all_done
    priority: 5
"""


def _refused(text: str | bytes, fmt: Format = "yaml", limits: Limits | None = None) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_text(text, fmt=fmt, source="spec.txt", limits=limits or Limits())
    return info.value


# -- good specs ------------------------------------------------------------------------


def test_yaml_spec_loads_every_field() -> None:
    p = pipeline_from_text(GOOD_YAML, fmt="yaml")

    assert (p.name, p.description, p.owner) == ("demo", "a demo pipeline", "ml-team")
    assert p.params == {"epochs": 3, "dataset": "iris"}
    assert p.max_parallel_tasks == 4
    assert p.failure_strategy == "fail_fast"
    ingest, train = p.tasks
    assert (ingest.id, ingest.operator, ingest.priority) == ("ingest", "bash", 10)
    assert p.retry_of(ingest).backoff == "exponential"  # from defaults
    assert p.timeout_of(ingest) == 60
    assert (train.call, train.upstream, train.priority) == ("my_steps:train", ["ingest"], 5)
    assert train.parameters == {"epochs": "${params.epochs}"}  # substituted at run time
    assert (train.resources.cpu, train.resources.memory_gb) == (2, 1.5)  # type: ignore[union-attr]
    assert p.retry_of(train).max_retries == 3
    assert p.timeout_of(train) == 30
    assert p.trigger_rule_of(train) == "all_done"


def test_json_and_yaml_of_the_same_spec_are_the_same_pipeline() -> None:
    import yaml

    data = yaml.safe_load(GOOD_YAML)
    from_json = pipeline_from_text(json.dumps(data), fmt="json")
    from_yaml = pipeline_from_text(GOOD_YAML.encode(), fmt="yaml")
    assert from_json.content_hash() == from_yaml.content_hash()


def test_load_pipeline_reads_files_by_extension(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(GOOD_YAML)
    (tmp_path / "p.json").write_text(json.dumps({"name": "j", "tasks": []}))
    assert load_pipeline(str(tmp_path / "p.yml")).name == "demo"
    assert load_pipeline(str(tmp_path / "p.json")).name == "j"


# -- hostile text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "needle"),
    [
        pytest.param("", "yaml", "spec.txt is empty", id="empty"),
        pytest.param("  \n\t\n", "yaml", "spec.txt is empty", id="whitespace"),
        pytest.param(b"", "json", "spec.txt is empty", id="empty-bytes-json"),
        pytest.param(b"\xff\xfe\xfa binary", "yaml", "is not UTF-8 text (byte 0)", id="binary"),
        pytest.param(b"name: caf\xe9\n", "yaml", "is not UTF-8 text (byte 9)", id="latin-1"),
        pytest.param("name: a\x00b\n", "yaml", "contains a NUL byte at offset 7", id="nul"),
        pytest.param('{"name": "\x00"}', "json", "contains a NUL byte", id="nul-json"),
        pytest.param("- a\n- b\n", "yaml", "must be a mapping", id="list"),
        pytest.param(
            "[1, 2]", "json", "must be a mapping with `name:` and `tasks:`", id="json-list"
        ),
        pytest.param("42\n", "yaml", "not int", id="scalar-int"),
        pytest.param("just some words\n", "yaml", "not str", id="scalar-str"),
        pytest.param("~\n", "yaml", "not nothing", id="null"),
        pytest.param("name: [unclosed\n", "yaml", "is not valid YAML at line", id="bad-yaml"),
        pytest.param("name: a\n\tbad: tab\n", "yaml", "is not valid YAML", id="yaml-tab"),
        pytest.param('{"name": "a",}', "json", "is not valid JSON", id="bad-json"),
        pytest.param("name: a\n---\nname: b\n", "yaml", "holds 2 YAML documents", id="two-docs"),
        pytest.param("1: a\nname: b\n", "yaml", "mapping key 1 is a int", id="int-key"),
        pytest.param(
            "name: p\ntasks:\n  - {id: a, 2.5: x}\n", "yaml", "is a float", id="float-key"
        ),
    ],
)
def test_hostile_text_is_refused_with_a_message(
    text: str | bytes, fmt: Format, needle: str
) -> None:
    exc = _refused(text, fmt)
    assert len(exc.problems) == 1
    assert needle in exc.problems[0].message
    assert needle in str(exc)


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("!!python/object/apply:os.system", id="os.system"),
        pytest.param("!!python/object/apply:subprocess.call", id="subprocess.call"),
        pytest.param("!!python/object/new:os.system", id="object-new"),
    ],
)
def test_yaml_tags_that_build_objects_are_refused_and_never_run(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    arg = f'["touch {marker}"]' if "subprocess" not in tag else f'[["touch", "{marker}"]]'
    text = f"name: p\ntasks:\n  - id: a\n    operator: {tag} {arg}\n"

    exc = _refused(text)

    assert not marker.exists()
    assert "YAML tags that build objects are not allowed" in str(exc)
    assert "at line 4" in str(exc)


def test_python_name_tag_is_refused(tmp_path: Path) -> None:
    exc = _refused("name: !!python/name:os.system\ntasks: []\n")
    assert "not allowed in a spec (remove the tag)" in str(exc)


def _billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*lol{i - 1}"] * 9)
        lines.append(f"lol{i}: &lol{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fmt", "limits", "limit", "needle"),
    [
        pytest.param(
            _billion_laughs(),
            "yaml",
            Limits(),
            "max_nodes",
            "expands to more than 5,000,000 values (STAGEFLOW_MAX_SPEC_NODES)",
            id="billion-laughs",
        ),
        pytest.param(
            "a: &a [x]\n" + "".join(f"b{i}: *a\n" for i in range(200)),
            "yaml",
            Limits(max_aliases=100),
            "max_aliases",
            "uses more than 100 YAML aliases (STAGEFLOW_MAX_SPEC_ALIASES)",
            id="too-many-aliases",
        ),
        pytest.param(
            "[" * 100_000 + "]" * 100_000,
            "yaml",
            Limits(),
            "max_depth",
            "nested deeper than the limit of 64 levels",
            id="deep-flow-yaml",
        ),
        pytest.param(
            "[" * 100_000 + "]" * 100_000,
            "json",
            Limits(),
            "max_depth",
            "nested deeper than the limit of 64 levels (STAGEFLOW_MAX_SPEC_DEPTH)",
            id="deep-json",
        ),
        pytest.param(
            '[{"a": ' * 30_000,
            "json",
            Limits(),
            "max_depth",
            "nested deeper than the limit of 64 levels (STAGEFLOW_MAX_SPEC_DEPTH)",
            id="deep-unclosed-json",
        ),
        pytest.param(
            "[" * 100 + "]" * 100,
            "json",
            Limits(),
            "max_depth",
            "nested deeper than the limit of 64 levels (STAGEFLOW_MAX_SPEC_DEPTH)",
            id="json-past-the-limit",
        ),
        pytest.param(
            "".join(f"{'  ' * i}k{i}:\n" for i in range(80)),
            "yaml",
            Limits(),
            "max_depth",
            "nested deeper than the limit of 64 levels",
            id="deep-block-yaml",
        ),
        pytest.param(
            "name: p\ntasks: []\n" + "# padding\n" * 200,
            "yaml",
            Limits(max_bytes=1000),
            "max_bytes",
            "spec.txt is 2,018 bytes, over the limit of 1,000 (STAGEFLOW_MAX_SPEC_BYTES)",
            id="too-big",
        ),
    ],
)
def test_limits_refuse_absurd_documents(
    text: str, fmt: Format, limits: Limits, limit: str, needle: str
) -> None:
    with pytest.raises(SpecLimitExceeded) as info:
        parse_document(text, fmt=fmt, source="spec.txt", limits=limits)
    assert info.value.limit == limit
    assert needle in str(info.value)
    assert info.value.exit_code == 2


def test_too_many_tasks_names_the_limit() -> None:
    data = {"name": "p", "tasks": [{"id": f"t{i}", "operator": "bash"} for i in range(11)]}
    with pytest.raises(SpecLimitExceeded) as info:
        pipeline_from_data(data, Limits(max_tasks=10))
    assert info.value.limit == "max_tasks"
    assert "the pipeline has 11 tasks, over the limit of 10 (STAGEFLOW_MAX_TASKS)" in str(
        info.value
    )
    pipeline_from_data({"name": "p", "tasks": data["tasks"][:10]}, Limits(max_tasks=10))


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("name: p\ntasks: []\n" + "#" * 5000)
    with pytest.raises(SpecLimitExceeded) as info:
        load_pipeline(str(spec), Limits(max_bytes=4096))
    assert info.value.limit == "max_bytes"
    assert "big.yaml is 5,018 bytes, over the limit of 4,096" in str(info.value)


# -- wrong types ----------------------------------------------------------------------------


def _one_task(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "tasks": [{"id": "a", "operator": "bash", **fields}]}


@pytest.mark.parametrize(
    ("data", "task", "field", "needle"),
    [
        pytest.param({"name": 5, "tasks": []}, None, "name", "valid string, got 5", id="name-int"),
        pytest.param({"tasks": []}, None, "name", "is required; add it", id="name-missing"),
        pytest.param(
            {"name": "p", "tasks": {"a": 1}}, None, "tasks", "valid list", id="tasks-mapping"
        ),
        pytest.param(
            {"name": "p", "tasks": ["just a string"]},
            "#1",
            None,
            "valid dictionary",
            id="task-string",
        ),
        pytest.param(
            {"name": "p", "tasks": [{"id": 7, "operator": "bash"}]},
            "#1",
            "id",
            "valid string, got 7",
            id="id-int",
        ),
        pytest.param(
            {"name": "p", "tasks": [{"operator": "bash"}]},
            "#1",
            "id",
            "is required; add it",
            id="id-missing",
        ),
        pytest.param(
            {"name": "p", "params": [1], "tasks": []},
            None,
            "params",
            "valid dictionary, got [1]",
            id="params-list",
        ),
        pytest.param(
            {"name": "p", "max_parallel_tasks": "zero", "tasks": []},
            None,
            "max_parallel_tasks",
            "valid integer",
            id="max-parallel-str",
        ),
        pytest.param(
            {"name": "p", "max_parallel_tasks": 0, "tasks": []},
            None,
            "max_parallel_tasks",
            "greater than or equal to 1",
            id="max-parallel-zero",
        ),
        pytest.param(
            {"name": "p", "failure_strategy": "explode", "tasks": []},
            None,
            "failure_strategy",
            "'fail_fast' or 'continue', got 'explode'",
            id="failure-strategy",
        ),
        pytest.param(_one_task(upstream="b"), "a", "upstream", "valid list", id="upstream-str"),
        pytest.param(
            _one_task(parameters=["x"]), "a", "parameters", "valid dictionary", id="parameters"
        ),
        pytest.param(
            _one_task(retry={"max_retries": -1}),
            "a",
            "retry.max_retries",
            "greater than or equal to 0, got -1",
            id="retries-negative",
        ),
        pytest.param(
            _one_task(retry={"backoff": "quadratic"}),
            "a",
            "retry.backoff",
            "'none', 'fixed', 'linear' or 'exponential', got 'quadratic'",
            id="backoff",
        ),
        pytest.param(_one_task(retry=3), "a", "retry", "valid dictionary", id="retry-not-mapping"),
        pytest.param(
            _one_task(timeout_seconds=-3),
            "a",
            "timeout_seconds",
            "greater than 0, got -3",
            id="timeout-negative",
        ),
        pytest.param(
            _one_task(resources={"cpu": "lots"}),
            "a",
            "resources.cpu",
            "valid number",
            id="cpu-str",
        ),
        pytest.param(
            _one_task(trigger_rule="sometimes"),
            "a",
            "trigger_rule",
            "'all_success'",
            id="trigger-rule",
        ),
        pytest.param(
            _one_task(priority="urgent"),
            "a",
            "priority",
            "one of low, normal, high, critical, got 'urgent'",
            id="priority-name",
        ),
        pytest.param(
            _one_task(priority=[1]), "a", "priority", "priority must be an integer", id="priority"
        ),
        pytest.param(
            {"name": "p", "defaults": 3, "tasks": []},
            None,
            "defaults",
            "valid dictionary",
            id="defaults",
        ),
    ],
)
def test_wrong_types_name_task_and_field(
    data: dict[str, Any], task: str | None, field: str | None, needle: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        pipeline_from_data(data)
    found = [(p.task, p.field, p.message) for p in info.value.problems]
    assert len(found) == 1, found
    assert found[0][:2] == (task, field)
    assert needle in found[0][2]


def test_every_refusal_is_a_stageflow_error_with_exit_code_2() -> None:
    for text in ("", "- a\n", "name: [", "x: !!python/object/apply:os.getcwd []\n"):
        with pytest.raises(StageflowError) as info:
            pipeline_from_text(text, fmt="yaml")
        assert isinstance(info.value, InvalidSpec)
        assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        pytest.param("missing.yaml", "missing.yaml: no such file", id="missing"),
        pytest.param("pipeline", "no such file; give a .yaml/.json file", id="no-suffix"),
        pytest.param("nosuch_module_xyz:pipeline", "cannot import module", id="module"),
        pytest.param("json:no_such_attr", "module 'json' has no attribute", id="attr"),
    ],
)
def test_load_pipeline_usage_errors(target: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        load_pipeline(target)
    assert needle in str(info.value)


def test_load_pipeline_of_a_folder_or_unknown_extension(tmp_path: Path) -> None:
    folder = tmp_path / "specs.yaml"
    folder.mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        load_pipeline(str(folder))
    txt = tmp_path / "spec.txt"
    txt.write_text("name: p\n")
    with pytest.raises(UsageError, match=r"unknown file type '\.txt'; use \.yaml, \.yml or \.json"):
        load_pipeline(str(txt))


def test_load_pipeline_of_an_object_that_is_not_a_pipeline(tmp_path: Path) -> None:
    module = tmp_path / "not_a_pipeline_mod.py"
    module.write_text("value = 1\n\ndef broken():\n    raise RuntimeError('nope')\n")
    with pytest.raises(InvalidSpec) as info:
        load_pipeline(f"{module}:value")
    assert "is int 1, not a stageflow Pipeline; name a Pipeline object" in str(info.value)
    with pytest.raises(UsageError, match=r"calling broken\(\) raised RuntimeError: nope"):
        load_pipeline(f"{module}:broken")
