"""run_all gives the same results, bitwise and in task order, whatever executes the runs."""

import importlib.util

import pytest
from smoke_training import train_smoke_and_hash

from gravrev.executor import ExecutorConfig, run_all

SEEDS = [3, 1, 2]


def train_20_steps(seed: int) -> str:
    return train_smoke_and_hash(seed, steps=20)


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two is not allowed")
    return x * 10


@pytest.fixture(scope="module")
def one_worker() -> list[str]:
    return run_all(train_20_steps, SEEDS, ExecutorConfig("local", 1, None), "runs")


def test_in_process_results_are_in_task_order_and_distinct(one_worker):
    assert len(one_worker) == len(SEEDS) == len(set(one_worker))
    assert one_worker[1] == train_20_steps(SEEDS[1])


def test_two_workers_give_the_bytes_of_one(one_worker):
    assert run_all(train_20_steps, SEEDS, ExecutorConfig("local", 2, None), "runs") == one_worker


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_gives_the_bytes_of_one_worker(one_worker):
    assert run_all(train_20_steps, SEEDS, ExecutorConfig("ray", 2, None), "runs") == (
        one_worker
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_raises_its_own_exception_naming_the_task(workers):
    with pytest.raises(ValueError, match="two is not allowed") as info:
        run_all(fail_on_two, [1, 2, 3], ExecutorConfig("local", workers, None), "runs")
    assert "in task 1: 2" in info.value.__notes__


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="executor.kind"):
        run_all(fail_on_two, [1], ExecutorConfig("dask", 1, None), "runs")
