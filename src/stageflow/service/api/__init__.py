"""The REST API (FastAPI): a thin renderer over the operations layer.

``create_app(settings)`` builds the application; ``stageflow serve`` runs it under
uvicorn. Modules: ``app`` (the application, its errors and middleware), ``auth``
(bearer tokens, roles, owners, the failed-authentication limit), one ``routes_*``
module per area (pipelines, runs, administration, operations, the seeds' aliases).
No route holds SQL or a business rule: each checks who asks, calls ``operations``
and returns its dataclass's ``as_json()``. FastAPI is imported only here (the
``server`` extra), never by ``stageflow run``.
"""

from __future__ import annotations

from stageflow.service.api.app import create_app

__all__ = ["create_app"]
