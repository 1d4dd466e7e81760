"""What admission says of requests that can never fit: every part of a request at
once, and detected amounts rounded for people."""

from __future__ import annotations

from stageflow.engine.admission import Admission, Capacity, Request


def test_every_part_that_cannot_fit_is_named() -> None:
    found = Admission(Capacity(cpu=4, memory_gb=23.5403, gpu=0)).all_infeasible(
        Request(cpu=8, memory_gb=100, gpu=4)
    )
    assert [field for field, _ in found] == [
        "resources.cpu",
        "resources.memory_gb",
        "resources.gpu",
    ]
    messages = dict(found)
    assert (
        "resources.memory_gb is 100 but this machine has 23.5 GB of memory"
        in (messages["resources.memory_gb"])
    )
    assert "resources.gpu is 4 but this machine has 0 GPUs" in messages["resources.gpu"]


def test_the_first_problem_is_still_why_infeasible() -> None:
    admission = Admission(Capacity(cpu=2, memory_gb=7.754, gpu=1))
    request = Request(memory_gb=64, gpu=2)
    assert admission.why_infeasible(request) == admission.all_infeasible(request)[0]
    assert "this machine has 7.75 GB of memory" in (admission.infeasible(request) or "")
    assert admission.all_infeasible(Request(cpu=1)) == []


def test_a_fractional_gpu_above_one_is_named_once() -> None:
    found = Admission(Capacity(cpu=2, memory_gb=8, gpu=0)).all_infeasible(Request(gpu=1.5))
    assert [field for field, _ in found] == ["resources.gpu"]
    assert "whole number" in found[0][1]
