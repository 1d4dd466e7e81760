"""The MLflow side, on a real local MLflow store (SQLite in a temp folder): registration
and its gate, champion/challenger, promotion and rollback, batch scoring, and
``models serve`` answering real HTTP requests (in-process and through the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from stageflow.errors import UsageError
from stageflow.operators.base import TaskFailed
from stageflow.operators.ml import _mlflow
from stageflow.operators.ml.evaluation import EvaluationParams, ModelEvaluation
from stageflow.operators.ml.features import FeatureEngineering, FeatureParams
from stageflow.operators.ml.registry_ops import (
    BatchInference,
    BatchParams,
    DeploymentParams,
    ModelDeployment,
    ModelRegistration,
    RegistrationParams,
    gate,
)
from stageflow.operators.ml.training import ModelTraining, TrainingParams
from stageflow.service.model_server import load_served_model, make_server
from support.ml import make_ctx, metadata

STAGEFLOW = Path(sys.executable).with_name("stageflow")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One MLflow store for the module (creating one costs seconds); tests use their own names."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if "MLFLOW_TRACKING_URI" in k}
    yield tmp_path_factory.mktemp("mlflow-home")
    os.environ.update(saved)


@pytest.fixture(scope="module")
def data(home: Path) -> dict[str, Any]:
    """Features of breast cancer and three trained models (good, good, poor)."""
    frame = load_breast_cancer(as_frame=True).frame
    feats = FeatureEngineering().run(
        FeatureParams.model_validate({"steps": [{"scale": {}}], "holdout_size": 0.1, "seed": 0}),
        {"data": frame},
        make_ctx(home, "features"),
    )
    models = {}
    for name, params in {
        "logistic": {"algorithm": "logistic_regression"},
        "tree": {"algorithm": "decision_tree", "hyperparameters": {"max_depth": 1}},
    }.items():
        models[name] = ModelTraining().run(
            TrainingParams.model_validate({**params, "seed": 0}),
            {"features": feats},
            make_ctx(home, f"train_{name}"),
        )
    return {"features": feats, **models}


def evaluate(home: Path, data: dict[str, Any], model: str, name: str, task: str) -> Any:
    params = EvaluationParams.model_validate(
        {"metric": "f1", "pictures": False, "champion": {"model_name": name}}
    )
    inputs = {"features": data["features"], "train": data[model]}
    return ModelEvaluation().run(params, inputs, make_ctx(home, task))


def register(home: Path, evaluation: Any, task: str, **params: Any) -> Any:
    ctx = make_ctx(home, task)
    return ModelRegistration().run(
        RegistrationParams.model_validate(params), {"e": evaluation}, ctx
    )


def deploy(home: Path, registered: Any, task: str, **params: Any) -> Any:
    ctx = make_ctx(home, task)
    inputs = {"register": registered} if registered is not None else {}
    return ModelDeployment().run(DeploymentParams.model_validate(params), inputs, ctx)


def test_register_gate_promote_and_roll_back(home: Path, data: dict[str, Any]) -> None:
    name = "gatekeeper"
    first = evaluate(home, data, "logistic", name, "evaluate_1")
    assert first["champion"]["winner"] == "challenger" and first["champion"]["version"] is None
    v1 = register(home, first, "register_1", model_name=name, alias="staging", tags=["demo"])
    assert (v1["registered"], v1["version"], v1["alias"]) == (True, "1", "staging")

    client = _mlflow.client(_mlflow.tracking_uri(None, home))
    version = client.get_model_version_by_alias(name, "staging")
    assert str(version.version) == "1"
    assert float(version.tags["metric.f1"]) == pytest.approx(first["metrics"]["f1"])
    assert version.tags["demo"] == "true" and version.tags["stageflow.task_id"] == "register_1"
    run = client.get_run(v1["mlflow_run_id"])
    assert run.data.tags["stageflow.kind"] == "task"
    assert run.data.params["algorithm"] == "logistic_regression"
    assert metadata(make_ctx(home, "register_1"))["writes"][0]["uri"] == f"models:/{name}/1"

    promoted = deploy(home, v1, "promote_1", alias="production", only_if_better_than="production")
    assert (promoted["promoted"], promoted["previous_version"]) == (True, None)

    # A worse challenger, measured against the champion on the same rows.
    second = evaluate(home, data, "tree", name, "evaluate_2")
    champion = second["champion"]
    assert champion["winner"] == "champion" and champion["version"] == "1"
    assert champion["champion_value"] == pytest.approx(first["metrics"]["f1"])
    blocked = register(
        home, second, "register_2", model_name=name, only_if_better_than="production"
    )
    assert blocked["registered"] is False
    assert "does not beat gatekeeper@production v1" in blocked["reason"]
    assert "on the same rows" in blocked["reason"]
    skipped = deploy(home, blocked, "promote_2", alias="production")
    assert skipped["promoted"] is False and skipped["reason"].startswith("nothing to promote")

    # Registered anyway, the gate on deployment still holds it back (registered metrics).
    v2 = register(home, {**second, "champion": None}, "register_3", model_name=name)
    assert v2["version"] == "2"
    held = deploy(
        home,
        {**v2, "champion": None},
        "promote_3",
        alias="production",
        only_if_better_than="production",
    )
    assert held["promoted"] is False and "as registered" in held["reason"]
    forced = deploy(home, v2, "promote_4", alias="production")
    assert (forced["promoted"], forced["version"], forced["previous_version"]) == (True, "2", "1")
    assert str(client.get_model_version_by_alias(name, "production-previous").version) == "1"

    back = deploy(home, None, "rollback", model_name=name, alias="production", rollback=True)
    assert (back["version"], back["previous_version"]) == ("1", "2")
    assert str(client.get_model_version_by_alias(name, "production").version) == "1"


def test_batch_inference_by_alias_and_by_upstream_model(home: Path, data: dict[str, Any]) -> None:
    name = "scorer"
    evaluation = evaluate(home, data, "logistic", name, "evaluate_s")
    registered = register(home, evaluation, "register_s", model_name=name, alias="production")
    holdout = data["features"]["holdout"]

    ctx = make_ctx(home, "score")
    params = BatchParams.model_validate({"model": f"{name}@production", "keep_columns": ["target"]})
    scored = BatchInference().run(params, {"features": data["features"]}, ctx)
    assert list(scored.columns) == ["target", "prediction", "proba_0", "proba_1"]
    assert len(scored) == len(holdout) == 57
    assert (scored["prediction"] == scored["target"]).mean() > 0.9
    meta = metadata(ctx)
    assert {r["uri"] for r in meta["reads"]} >= {f"models:/{name}/{registered['version']}"}
    saved = pd.read_parquet(meta["info"]["predictions"])
    assert saved["prediction"].tolist() == scored["prediction"].tolist()

    direct = BatchInference().run(
        BatchParams.model_validate({"split": "test", "probabilities": False}),
        {"features": data["features"], "train": data["logistic"]},
        make_ctx(home, "score_direct"),
    )
    assert "prediction" in direct.columns and "proba_0" not in direct.columns

    with pytest.raises(TaskFailed, match=r"no registered model scorer@nightly"):
        BatchInference().run(
            BatchParams.model_validate({"model": f"{name}@nightly"}),
            {"features": data["features"]},
            make_ctx(home, "score_missing"),
        )


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_serve_answers_the_mlflow_scoring_protocol(home: Path, data: dict[str, Any]) -> None:
    name = "served"
    evaluation = evaluate(home, data, "logistic", name, "evaluate_v")
    register(home, evaluation, "register_v", model_name=name, alias="production")
    served = load_served_model(f"{name}@production", _mlflow.tracking_uri(None, home))
    server = make_server(served, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    rows = data["features"]["holdout"].drop(columns=["target"]).head(4)
    expected = data["logistic"]["estimator"].predict(rows).tolist()
    try:
        with urllib.request.urlopen(f"{base}/ping", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            assert json.loads(response.read()) == {
                "model": name,
                "version": "1",
                "alias": "production",
            }
        split = {"dataframe_split": json.loads(rows.to_json(orient="split"))}
        records = {"dataframe_records": json.loads(rows.to_json(orient="records"))}
        instances = {"instances": json.loads(rows.to_json(orient="records"))}
        for payload in (split, records, instances):
            assert _post(f"{base}/invocations", json.dumps(payload).encode()) == (
                200,
                {"predictions": expected},
            )
        csv = rows.to_csv(index=False).encode()
        assert _post(f"{base}/invocations", csv, "text/csv") == (200, {"predictions": expected})
        status, error = _post(f"{base}/invocations", b'{"rows": []}')
        assert status == 400 and error["error_code"] == "BAD_REQUEST"
        assert "dataframe_split" in error["message"]
        status, error = _post(f"{base}/invocations", b'{"dataframe_records": [{"x": 1}]}')
        assert status == 400
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UsageError, match=r"no registered model served@canary"):
        load_served_model(f"{name}@canary", _mlflow.tracking_uri(None, home))


def test_models_serve_from_the_cli(home: Path, data: dict[str, Any]) -> None:
    name = "cli-served"
    evaluation = evaluate(home, data, "tree", name, "evaluate_c")
    register(home, evaluation, "register_c", model_name=name, alias="production")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "MLFLOW_"))}
    proc = subprocess.Popen(
        [
            str(STAGEFLOW),
            "--home",
            str(home),
            "models",
            "serve",
            f"{name}@production",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = ""
        for line in proc.stderr:
            if line.startswith("serving "):
                break
        assert line.startswith(f"serving {name} version 1 (@production) on http://127.0.0.1:")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        rows = data["features"]["test"].drop(columns=["target"]).head(3)
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split"))}
        status, body = _post(url, json.dumps(payload).encode())
        assert status == 200
        assert body == {"predictions": data["tree"]["estimator"].predict(rows).tolist()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    missing = subprocess.run(
        [str(STAGEFLOW), "--home", str(home), "models", "serve", "nothing@production"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2
    assert "error: no registered model nothing@production" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_champion_that_cannot_be_compared_keeps_its_place(
    home: Path, data: dict[str, Any]
) -> None:
    from sklearn.datasets import load_iris

    name = "other-columns"
    iris_features = FeatureEngineering().run(
        FeatureParams.model_validate({"seed": 0}),
        {"data": load_iris(as_frame=True).frame},
        make_ctx(home, "features_iris"),
    )
    iris_model = ModelTraining().run(
        TrainingParams.model_validate({"algorithm": "logistic_regression"}),
        {"features": iris_features},
        make_ctx(home, "train_iris"),
    )
    iris_eval = ModelEvaluation().run(
        EvaluationParams.model_validate({"metric": "f1", "pictures": False}),
        {"features": iris_features, "train": iris_model},
        make_ctx(home, "evaluate_iris"),
    )
    v1 = register(home, iris_eval, "register_iris", model_name=name, alias="production")
    client = _mlflow.client(_mlflow.tracking_uri(None, home))
    assert client.get_model_version(name, "1").tags["stageflow.schema"] == v1["schema"]

    challenger = evaluate(home, data, "logistic", name, "evaluate_other")
    comparison = challenger["champion"]
    assert comparison["incomparable"] is True and comparison["winner"] is None
    assert "cannot score these rows" in comparison["summary"]
    refused = (
        f"{name}@production v1 cannot score the candidate's rows (it was trained on other "
        "columns), so the two cannot be compared: the champion keeps its place; to replace "
        "it with a model of another schema, set `allow_schema_change: true` on this task "
        "(or use another model_name)"
    )
    assert gate(client, name, "production", "f1", challenger["metrics"], challenger) == (
        False,
        refused,
    )
    blocked = register(
        home, challenger, "register_blocked", model_name=name, only_if_better_than="production"
    )
    assert (blocked["registered"], blocked["reason"]) == (False, refused)

    # Registered anyway (as staging), the deployment gate holds it back too, and
    # without the evaluation's comparison the registered schemas tell them apart.
    v2 = register(home, {**challenger, "champion": None}, "register_other", model_name=name)
    assert v2["version"] == "2" and v2["schema"] != v1["schema"]
    for upstream in (v2, {**v2, "champion": None}, {**v2, "champion": None, "schema": None}):
        held = deploy(
            home, upstream, "promote_held", alias="production", only_if_better_than="production"
        )
        assert held["promoted"] is False, held["reason"]
        assert f"{name}@production v1 " in held["reason"]
        assert "set `allow_schema_change: true`" in held["reason"]
    assert str(client.get_model_version_by_alias(name, "production").version) == "1"

    promoted = deploy(
        home,
        v2,
        "promote_other",
        alias="production",
        only_if_better_than="production",
        allow_schema_change=True,
    )
    assert promoted["reason"] == (
        f"{name}@production -> version 2 (was 1, kept as {name}@production-previous)"
    )
