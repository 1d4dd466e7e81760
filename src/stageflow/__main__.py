"""``python -m stageflow``: the ``stageflow`` command (how ``serve`` starts its workers)."""

from stageflow.service.cli import main

main()
