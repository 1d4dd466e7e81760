"""``stageflow models serve``: an HTTP prediction endpoint for a registered model.

It speaks MLflow's scoring protocol, so clients of ``mlflow models serve``
work unchanged:

* ``GET /ping``, ``GET /health``: 200 when the model is loaded;
* ``GET /version``: the MLflow version; ``GET /``: which model this is;
* ``POST /invocations`` with JSON ``{"dataframe_split": {"columns": [...],
  "data": [[...]]}}``, ``{"dataframe_records": [{...}]}``,
  ``{"instances": [...]}`` or ``{"inputs": ...}``, or a CSV body
  (``Content-Type: text/csv``); answers ``{"predictions": [...]}``.

Bad input is a 400 with ``{"error_code": "BAD_REQUEST", "message": ...}``.
The model is MLflow's ``pyfunc`` flavour of the registered version, so its
signature (column names and types) is enforced as MLflow would. The server is
the standard library's threaded HTTP server: one process, no extra dependency.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ServedModel", "load_served_model", "make_server", "parse_payload"]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024


@dataclass
class ServedModel:
    """A loaded model and what to say about it."""

    name: str
    version: str
    alias: str | None
    model: Any  # mlflow.pyfunc.PyFuncModel, or anything with predict(DataFrame)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "alias": self.alias}


def load_served_model(ref: str, tracking_uri: str) -> ServedModel:
    """Load ``NAME@ALIAS`` / ``NAME/VERSION`` from the registry at ``tracking_uri``.

    Raises ``UsageError`` for a bad reference or an unknown model/alias, ``MissingExtra``
    without mlflow.
    """
    from stageflow.errors import UsageError
    from stageflow.operators.base import TaskFailed
    from stageflow.operators.ml import _mlflow

    try:
        name, alias, version = _mlflow.model_uri(ref)
        c = _mlflow.client(tracking_uri)
    except TaskFailed as exc:
        raise UsageError(str(exc), field="model") from None
    if alias is not None:
        mv = _mlflow.champion(c, name, alias)
        if mv is None:
            raise UsageError(
                f"no registered model {name}@{alias} in {_mlflow.mask_uri(tracking_uri)}; "
                "register one with the model_registration operator",
                field="model",
            )
        version = str(mv.version)
    elif version is None:
        raise UsageError(f"say which version of {name}: {name}@ALIAS or {name}/VERSION")
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(c.get_model_version_download_uri(name, version))
    except Exception as exc:  # MlflowException: unknown version, unreadable artifacts
        raise UsageError(f"cannot load {name} version {version}: {exc}", field="model") from None
    return ServedModel(name, version, alias, model)


def parse_payload(body: bytes, content_type: str) -> Any:
    """The DataFrame an ``/invocations`` request describes; ``ValueError`` says what is wrong."""
    import pandas as pd

    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        return pd.read_csv(io.BytesIO(body))
    if kind not in ("application/json", ""):
        raise ValueError(f"unsupported content type '{kind}'; use application/json or text/csv")
    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            "the body must be a JSON object with one of: dataframe_split, "
            "dataframe_records, instances, inputs"
        )
    if "dataframe_split" in data:
        split = data["dataframe_split"]
        if not isinstance(split, dict) or "data" not in split:
            raise ValueError("dataframe_split needs 'columns' and 'data'")
        return pd.DataFrame(split["data"], columns=split.get("columns"), index=split.get("index"))
    if "dataframe_records" in data:
        return pd.DataFrame.from_records(data["dataframe_records"])
    for key in ("instances", "inputs"):
        if key in data:
            value = data[key]
            if isinstance(value, dict):
                return pd.DataFrame(value)
            if isinstance(value, list):
                return pd.DataFrame(value)
            raise ValueError(f"'{key}' must be a list or an object")
    raise ValueError(
        "the JSON object needs one of: dataframe_split, dataframe_records, instances, inputs"
    )


def make_server(served: ServedModel, host: str, port: int) -> ThreadingHTTPServer:
    """A server (not yet serving) for ``served`` on ``host:port`` (0: any free port)."""
    lock = threading.Lock()  # scikit-learn models are not all safe to call concurrently

    class Handler(BaseHTTPRequestHandler):
        server_version = "stageflow-model-server"

        def log_message(self, format: str, *args: Any) -> None:
            logger.info("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path in ("/ping", "/health"):
                self._send(200, b"\n", "application/json")
            elif path == "/version":
                import mlflow

                self._send(200, str(mlflow.__version__).encode(), "text/plain")
            elif path == "/":
                self._json(200, served.describe())
            else:
                self._json(404, {"error_code": "NOT_FOUND", "message": f"no route {path}"})

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path != "/invocations":
                self._json(404, {"error_code": "NOT_FOUND", "message": f"no route {path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(413, {"error_code": "BAD_REQUEST", "message": "body too large"})
                return
            body = self.rfile.read(length)
            try:
                frame = parse_payload(body, self.headers.get("Content-Type", ""))
                with lock:
                    predictions = served.model.predict(frame)
            except Exception as exc:  # bad input: the client's to fix; say why
                self._json(400, {"error_code": "BAD_REQUEST", "message": str(exc)})
                return
            self._json(200, {"predictions": _plain(predictions)})

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data, default=str).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((host, port), Handler)


def _plain(predictions: Any) -> Any:
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):
        return predictions.tolist()
    return list(predictions)
