"""run_all gives the same results, bitwise and in task order, whatever executes the runs."""

import importlib.util
from dataclasses import dataclass

import pytest
from smoke_training import train_smoke_and_hash

from gravrev.config.experiment import ExecutorConfig
from gravrev.runtime.executor import longest_first, run_all

pytestmark = pytest.mark.slow  # starts process pools and a Ray cluster

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


@dataclass(frozen=True)
class Costed:
    name: str
    cost: int


def name_of(task: Costed) -> str:
    return task.name


def test_the_longest_runs_start_first_and_results_keep_task_order():
    tasks = [Costed("a", 1), Costed("b", 5), Costed("c", 1), Costed("d", 9)]
    assert longest_first(tasks) == [3, 1, 0, 2]  # ties keep task order
    assert longest_first([1, 2, 3]) == [0, 1, 2]  # no cost: task order
    got = run_all(name_of, tasks, ExecutorConfig("local", 2, None), "runs")
    assert got == ["a", "b", "c", "d"]
