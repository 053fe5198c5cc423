"""Pitfalls at scale: DistributedSampler's padding and set_epoch, sharding, and real DDP.

The sampler properties need no process group (num_replicas and rank are passed). The DDP
properties run one process group of 2 ranks (gloo over 127.0.0.1, started here with a hard
timeout) over a fixed list of generated cases, and compare with one process on the union.
"""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from linreg import checks, distributed, pitfalls
from tests import strategies as sts
from tests.refute import refutes

pytestmark = pytest.mark.distributed

world_sizes = st.integers(1, 8)


def sampler(n: int, world_size: int, rank: int, seed: int, drop_last: bool = False) -> Any:
    return distributed.index_sampler(
        n, world_size=world_size, rank=rank, seed=seed, drop_last=drop_last
    )


def ranks_epoch(n: int, world_size: int, seed: int, epoch: int, drop_last: bool) -> list[list[int]]:
    out = []
    for rank in range(world_size):
        s = sampler(n, world_size, rank, seed, drop_last)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@given(st.integers(1, 300), world_sizes, st.booleans(), sts.seeds, st.integers(0, 5))
@example(1003, 2, False, 0, 0)
def test_pitfalls_distributed_sampler_ranks_are_equal_and_cover_the_data(
    n: int, world_size: int, drop_last: bool, seed: int, epoch: int
) -> None:
    ranks = ranks_epoch(n, world_size, seed, epoch, drop_last)
    lengths = {len(r) for r in ranks}
    assert len(lengths) == 1  # equal per-rank lengths: DDP takes the same number of steps
    union = Counter(i for r in ranks for i in r)
    if drop_last:
        assert sum(union.values()) == world_size * (n // world_size)
        assert max(union.values(), default=1) == 1  # the tail is dropped, nothing repeats
    else:
        assert set(union) == set(range(n))  # every sample, on some rank


@given(
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
    sts.seeds,
    st.integers(0, 5),
)
@example((1003, 2), 0, 0)
def test_pitfalls_distributed_sampler_repeats_the_first_indices_of_the_permutation(
    size: tuple[int, int], seed: int, epoch: int
) -> None:
    n, world_size = size
    total = world_size * -(-n // world_size)
    union = Counter(i for r in ranks_epoch(n, world_size, seed, epoch, False) for i in r)
    twice = sorted(i for i, c in union.items() if c == 2)
    assert len(twice) == total - n and max(union.values()) <= 2
    # PyTorch documents the padding as the first total - n indices of the epoch's permutation
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    assert twice == sorted(order[: total - n])


def orders_differ(args: tuple[int, int, int], epochs_of: Any) -> None:
    """Across 3 epochs, the ranks' concatenated orders are pairwise different."""
    n, world_size, seed = args
    per_rank = [epochs_of(sampler(n, world_size, r, seed), 3) for r in range(world_size)]
    orders = [tuple(i for r in per_rank for i in r[e]) for e in range(3)]
    if len(set(orders)) != 3:
        raise checks.CheckFailed("two epochs had the same order: the sampler did not reshuffle")


orderings = st.tuples(st.integers(20, 300), world_sizes, sts.seeds)  # 20! orders: no ties


@given(orderings)
def test_pitfalls_set_epoch_reshuffles_every_epoch(args: tuple[int, int, int]) -> None:
    orders_differ(args, lambda s, e: distributed.sampler_epochs(s, e))


def test_pitfalls_forgetting_set_epoch_repeats_the_order() -> None:
    refutes(orderings, lambda a: orders_differ(a, pitfalls.sampler_epochs_without_set_epoch))


@given(st.integers(1, 300), world_sizes, sts.seeds, st.integers(0, 5), st.integers(1, 16))
@example(1003, 2, 0, 0, 10)
def test_pitfalls_shard_iter_covers_every_sample_once_without_padding(
    n: int, world_size: int, seed: int, epoch: int, batch_size: int
) -> None:
    features = torch.arange(n, dtype=torch.float64).reshape(n, 1)
    seen = []
    lengths = []
    for rank in range(world_size):
        mine = [
            int(i)
            for X, _ in distributed.shard_iter(
                batch_size,
                features,
                -features,
                rank=rank,
                world_size=world_size,
                epoch=epoch,
                seed=seed,
            )
            for i in X.reshape(-1)
        ]
        seen += mine
        lengths.append(len(mine))
    assert sorted(seen) == list(range(n))  # exactly once each: no padding, nothing dropped
    assert max(lengths) - min(lengths) <= 1


# --- real DDP: 2 ranks, gloo, one process group for every case -----------------------------------

WORLD = 2
pytest.importorskip("torch.distributed")
needs_gloo = pytest.mark.skipif(not distributed.gloo_available(), reason="gloo is not available")


def generated_cases() -> list[dict[str, Any]]:
    """Cases drawn from a seeded RNG: sizes, batch sizes, lr, epochs, data seeds."""
    rng = random.Random(0)
    cases = []
    for k in range(4):
        n = WORLD * rng.randint(3, 30)  # equal shards
        base = {
            "n": n,
            "d": rng.randint(1, 3),
            "batch_size": rng.randint(1, 8),
            "lr": rng.uniform(0.005, 0.05),
            "num_epochs": rng.randint(1, 2),
            "seed": k,
        }
        cases += [
            {**base, "worker": "linreg.distributed:ddp_trajectory", "reduction": "mean"},
            {**base, "worker": "linreg.distributed:ddp_trajectory", "reduction": "sum"},
            {**base, "worker": "linreg.pitfalls:ddp_trajectory_sum_unscaled", "reduction": "sum"},
        ]
        cases.append(
            {
                **base,
                "n": n + 1,
                "worker": "linreg.distributed:ddp_full_shard_gradient",
                "reduction": "mean",
            }
        )  # n % 2 == 1: the sampler pads one sample
    return cases


CASES = generated_cases()


@pytest.fixture(scope="module")
def ddp_results() -> list[Any]:
    results = distributed.spawn(distributed.ddp_cases, WORLD, CASES, timeout=120)
    assert multiprocessing.active_children() == []  # no rank left behind
    return results[0]  # DDP keeps the ranks' params identical; rank 0's are the run's


def by_worker(name: str, results: list[Any]) -> list[tuple[dict[str, Any], Any]]:
    return [(c, r) for c, r in zip(CASES, results, strict=True) if c["worker"].endswith(name)]


@needs_gloo
def test_pitfalls_ddp_follows_one_process_on_the_union_of_shards(ddp_results: list[Any]) -> None:
    cases = by_worker(":ddp_trajectory", ddp_results)
    assert {c["reduction"] for c, _ in cases} == {"mean", "sum"}
    for case, steps in cases:  # mean at lr, and sum at lr * R (the correction)
        checks.check_same_trajectory(steps, distributed.single_process_trajectory(case, WORLD))


@needs_gloo
def test_pitfalls_ddp_sum_at_the_same_lr_divides_every_step_by_the_world_size(
    ddp_results: list[Any],
) -> None:
    cases = by_worker(":ddp_trajectory_sum_unscaled", ddp_results)
    assert cases
    for case, steps in cases:
        one = distributed.single_process_trajectory(case, WORLD)
        with pytest.raises(checks.CheckFailed):  # refuted against the single process at lr
            checks.check_same_trajectory(steps, one)
        smaller = distributed.single_process_trajectory({**case, "lr": case["lr"] / WORLD}, WORLD)
        checks.check_same_trajectory(steps, smaller)  # exactly the single process at lr / R


@needs_gloo
def test_pitfalls_ddp_gradient_on_padded_shards_counts_the_repeated_samples_twice(
    ddp_results: list[Any],
) -> None:
    cases = by_worker(":ddp_full_shard_gradient", ddp_results)
    assert cases
    for case, g_ddp in cases:
        X, y = distributed.case_data(case)
        net = distributed._linear(case)
        n, total = case["n"], WORLD * -(-case["n"] // WORLD)
        g_full = torch.autograd.grad(
            torch.nn.functional.mse_loss(net(X), y), (net.weight, net.bias)
        )
        with pytest.raises(checks.CheckFailed):  # not the full-data gradient
            checks.check_grads_close(g_ddp, g_full)
        repeated = distributed.padded_gradient_identity(case, WORLD)
        got = [total * g for g in g_ddp]
        want = [n * f + r for f, r in zip(g_full, repeated, strict=True)]
        checks.check_grads_close(got, want, rtol=1e-12, atol=1e-12 * n)


@needs_gloo
def test_pitfalls_ddp_a_dead_rank_fails_fast_with_a_clear_message_and_no_leftovers() -> None:
    with pytest.raises(
        distributed.DistributedFailure,
        match=r"^rank 1 was killed by SIGKILL; .*all ranks were ended$",
    ):
        distributed.spawn(distributed.ddp_dies, WORLD, 1, timeout=60)
    assert multiprocessing.active_children() == []


@needs_gloo
def test_pitfalls_ddp_a_hung_group_times_out_and_leaves_no_process() -> None:
    with pytest.raises(distributed.DistributedFailure, match="timed out after 3 s"):
        distributed.spawn(distributed.ddp_hangs, WORLD, 600.0, timeout=3)
    assert multiprocessing.active_children() == []
