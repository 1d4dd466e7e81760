"""The deployment files of ``deploy/``, checked statically (no image can be built or
pulled here): the Dockerfile with hadolint, the Kubernetes manifests with
kubernetes-validate (the API's schemas), the compose file with the Compose
Specification's schema (check-jsonschema) and its structure, every
``stageflow`` command they run parsed by the real CLI, and every query of the Grafana
dashboard naming a metric the API exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def check_stageflow_command(argv: list[str]) -> None:
    """``argv`` (``stageflow SUBCOMMAND [SUB] OPTIONS``) parses with the real CLI: the
    command exists and takes these options (a typo'd flag or a bad value raises)."""
    from stageflow.service.cli import cli

    assert argv[0] == "stageflow", argv
    ctx = click.Context(cli, info_name="stageflow")
    command = cli.get_command(ctx, argv[1])
    assert command is not None, argv
    rest = argv[2:]
    if isinstance(command, click.Group):
        group_ctx = click.Context(command, info_name=argv[1], parent=ctx)
        command = command.get_command(group_ctx, argv[2])
        assert command is not None, argv
        ctx, rest = group_ctx, argv[3:]
    command.make_context(command.name or "", list(rest), parent=ctx)


def test_the_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run(
        [str(BIN / "hadolint"), str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M)  # not root
    assert "HEALTHCHECK" in text and "/health" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    check_stageflow_command(json.loads(cmd.group(1)))


def test_the_kubernetes_manifests_validate() -> None:
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    proc = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *map(str, manifests)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = [d for m in manifests for d in yaml.safe_load_all(m.read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Service",
    ]
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        [container] = d["spec"]["template"]["spec"]["containers"]
        check_stageflow_command(container["args"])
        secret = container["env"][0]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "stageflow-db", "key": "url"}
        if "serve" in container["args"]:
            assert container["readinessProbe"]["httpGet"]["path"] == "/health"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def test_the_compose_file_follows_the_compose_specification() -> None:
    """The Compose Specification's JSON schema (vendored by check-jsonschema: no network)."""
    checker = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_compose_schema_check_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = (DEPLOY / "compose.yaml").read_text()
    broken.write_text(text.replace("services:", "servicez:", 1))
    checker = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "servicez" in proc.stdout + proc.stderr


def test_the_compose_file_holds_together() -> None:
    """What the schema cannot say: the services, volumes and commands fit together."""
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services: dict[str, Any] = spec["services"]
    assert set(services) == {"postgres", "api", "worker-1", "worker-2", "prometheus", "grafana"}
    declared_volumes = set(spec["volumes"])
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for needed in service.get("depends_on", {}):
            assert needed in services, (name, needed)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in declared_volumes, (name, volume)
            else:
                assert (DEPLOY / source).exists(), (name, volume)
        if "command" in service and service["command"][0] == "stageflow":
            check_stageflow_command(service["command"])
            assert service["environment"]["STAGEFLOW_DATABASE_URL"].startswith("postgresql://")
    assert (ROOT / services["api"]["build"]["context"].replace("..", ".")).exists()
    assert (DEPLOY.parent / "deploy" / "Dockerfile").exists()


def exported_metrics() -> set[str]:
    """The metric names a real app's /metrics shows (histograms and counters with
    their sample suffixes)."""
    import tempfile

    from fastapi.testclient import TestClient

    from stageflow import operations as ops
    from stageflow.runtime.settings import Settings
    from stageflow.service.api import create_app

    home = Path(tempfile.mkdtemp())
    store = ops.open_for_service(Settings(home=home))
    try:
        app = create_app(Settings(home=home), store=store)
        with TestClient(app) as client:
            client.get("/health")  # one request, so the HTTP series exist
            text = client.get("/metrics").text
    finally:
        store.close()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        names.update(name + suffix for suffix in suffixes.get(kind, ()))
    return names


def test_the_dashboard_s_quantiles_are_of_a_recent_window() -> None:
    """A quantile of a histogram's buckets as they stand is one over all time: after
    months of runs a slowdown today would not move it. Every quantile of stageflow's
    histograms is of a rate over the last hour (rate() also rides over a counter that
    restarts with an API process)."""
    dashboard = json.loads((DEPLOY / "grafana" / "stageflow-dashboard.json").read_text())
    quantiles = [
        (p["title"], t["expr"])
        for p in dashboard["panels"]
        for t in p["targets"]
        if t["expr"].startswith("histogram_quantile(")
    ]
    assert len(quantiles) >= 6
    for title, expr in quantiles:
        assert re.search(r"\(rate\(stageflow_[a-z_]+_bucket\[(1h|5m)\]\)\)", expr), (title, expr)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "stageflow-dashboard.json").read_text())
    exported = exported_metrics()
    assert {"stageflow_runs", "stageflow_http_requests_total"} <= exported
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert queries
    for expr in queries:
        names = set(re.findall(r"\b(stageflow_[a-z0-9_]+)", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
