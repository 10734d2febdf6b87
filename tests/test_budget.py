"""The own-model page's 7B arithmetic, from the shapes, the data sheet and the hf preset."""

import dataclasses

import pytest

from gravrev.config.load import resolve
from gravrev.report import budget
from gravrev.report import own_model as budget_text

MODEL, GPU = budget.Model(), budget.Hardware()
SCHEDULE = budget.schedule(resolve({"preset": "hf"}))


def test_schedule_counts_the_hf_presets_runs_and_generations():
    s = SCHEDULE
    # random_block and refusal_block are matched to the claim arm (block), which the check runs
    assert (s.seeds, s.lambdas, s.arms, s.controls, s.targets) == (3, 3, 4, 2, 0)
    # the shock regime: one history, its unblocked run and the two claim arms hf runs
    assert (s.shock_runs, s.shock_logged) == (1 * (1 + 2), 8 + 1)
    # the defenses: one history x its first seed x (baseline + 4 arms x 2 strengths)
    assert s.defense_runs == 1 * 1 * (1 + 4 * 2)
    assert s.runs == 3 + 3 * (1 + 2) + 4 * 3 + 3 + 9
    assert s.judged == 2 + s.logged * 3 * (1 + 4) + 3 + 3 * 9 + 9
    assert s.penalty_arms == 4  # block, push, refusal_block, random_block all read the pool
    # each run at its own regime's length: the shock runs are shorter; hf runs no search
    assert (s.steps, s.shock_steps, s.search_runs) == (150, 100, 0)
    assert s.total_steps == (s.runs - s.shock_runs) * 150 + s.shock_runs * 100


def test_the_search_runs_count_at_the_longest_horizon():
    tiny = resolve({"preset": "tiny"})
    s = budget.schedule(tiny)
    # 3 lrs x 3 warmups x 3 shares on 2 histories, and at most every cell again on the other 6
    # (the confirmation), each to T = 300, logged at 5, 10, 20, 50, the main log steps below
    # 300 and every horizon
    assert (s.search_runs, s.search_steps) == (3 * 3 * 3 * 8, 300)
    off = dataclasses.replace(tiny, regime=dataclasses.replace(tiny.regime, confirm=False))
    assert budget.schedule(off).search_runs == 3 * 3 * 3 * 2
    assert s.search_logged > len(tiny.regime.horizons)
    assert s.total_steps == (s.main_runs * s.steps + s.shock_runs * s.shock_steps
                             + s.search_runs * 300)


def test_lora_adapters_of_llama_7b_shapes():
    # rank x (fan-in + fan-out) for q, k, v, o (4096 -> 4096), gate, up (4096 -> 11008), down
    assert budget.lora_params_per_layer(MODEL, 8) == 8 * (4 * 8192 + 2 * 15104 + 15104)


@pytest.mark.parametrize("lr, exponent", [(2e-5, -7), (1e-4, -5), (1e-3, -1)])
def test_a_bf16_weight_at_or_above_2_to_the_exponent_cannot_move_by_lr(lr, exponent):
    assert budget.stuck_exponent(lr) == exponent
    assert 2.0 ** (exponent - 8) > lr >= 2.0 ** (exponent - 9)


def test_memory_and_time_follow_the_operation_counts():
    mem = budget.memory_budget(MODEL, SCHEDULE)
    assert mem.mixed == pytest.approx(112) and mem.bf16 == pytest.approx(56)
    assert mem.act_layer == pytest.approx(34 * 512 * 8 * 4096 / 1e9)
    t = budget.time_budget(MODEL, GPU, SCHEDULE)
    assert t.full_step == pytest.approx(6 * 7e9 * 4096 / (0.4 * 989e12))
    assert t.train == pytest.approx((t.steps * t.lora_step, t.steps * t.full_step))
    assert t.full_traffic == pytest.approx(12 * 56)  # concat 2, differences 6, norms 2, dot 2
    low, high = t.lora_total
    assert low < high and low > t.train[0]


def test_the_blocks_print_the_computed_numbers():
    mem = budget.memory_budget(MODEL, SCHEDULE)
    t = budget.time_budget(MODEL, GPU, SCHEDULE)
    blocks = {**budget_text.memory_blocks(MODEL, GPU, SCHEDULE, mem),
              **budget_text.time_blocks(MODEL, GPU, SCHEDULE, t)}
    assert "= 624,640" in blocks["lora"] and "19,988,480" in blocks["lora"]
    assert "2^-15 = 3.1e-5 > 2e-5" in blocks["stuck"]
    assert f"{SCHEDULE.runs} runs, {t.steps:,} steps" in blocks["runs"]
    assert "over one 80 GB GPU" in blocks["mixed"]
