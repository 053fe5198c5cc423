"""Pitfalls at scale: DistributedSampler's padding and set_epoch, sharding, and real DDP.

The sampler properties need no process group (num_replicas and rank are passed). The DDP
properties run one process group of 2 ranks (gloo over 127.0.0.1, started here with a hard
timeout) over a fixed list of generated cases, and compare with one process on the union.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import Counter
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from linreg import checks, distributed, pitfalls
from linreg.pitfalls import _ddp, _spawn, ddp_sum
from linreg.testing import strategies as sts
from tests import ddp_support

pytestmark = [pytest.mark.distributed, pytest.mark.heavy]

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


# --- real DDP: 2 ranks, gloo ------------------------------------------------------------------
# The catalogue's ddp-sum property runs DDP against one process on the union of the shards for
# linreg's worker and the wrong variant (tests/test_pitfalls_catalogue.py); here, what is
# particular to DDP: the exact size of the variant's steps, the padding, and failing ranks.

WORLD = ddp_sum.WORLD
pytest.importorskip("torch.distributed")
needs_gloo = pytest.mark.skipif(not _spawn.gloo_available(), reason="gloo is not available")


@needs_gloo
def test_pitfalls_ddp_sum_at_the_same_lr_is_one_process_at_lr_over_the_world_size() -> None:
    runs = ddp_sum.generated_runs()
    results = ddp_sum.ddp_results()[pitfalls.ddp_trajectory_sum_unscaled][: len(runs)]
    assert multiprocessing.active_children() == []  # no rank left behind
    for run, steps in zip(runs, results, strict=True):
        if run.reduction != "sum":
            continue
        one = _ddp.single_process_trajectory(run, WORLD)
        with pytest.raises(checks.CheckFailed):  # refuted against the single process at lr
            checks.check_same_trajectory(steps, one)
        smaller = _ddp.single_process_trajectory(dataclasses.replace(run, lr=run.lr / WORLD), WORLD)
        checks.check_same_trajectory(steps, smaller)  # exactly the single process at lr / R


@needs_gloo
def test_pitfalls_ddp_gradient_on_padded_shards_counts_the_repeated_samples_twice() -> None:
    runs = ddp_sum.padded_runs()
    results = ddp_sum.ddp_results()[_ddp.ddp_full_shard_gradient]
    for run, g_ddp in zip(runs, results, strict=True):
        X, y = run.data()
        net = run.linear()
        n, total = run.n, WORLD * -(-run.n // WORLD)
        g_full = torch.autograd.grad(
            torch.nn.functional.mse_loss(net(X), y), (net.weight, net.bias)
        )
        with pytest.raises(checks.CheckFailed):  # not the full-data gradient
            checks.check_grads_close(g_ddp, g_full)
        repeated = _ddp.padded_gradient_identity(run, WORLD)
        got = [total * g for g in g_ddp]
        want = [n * f + r for f, r in zip(g_full, repeated, strict=True)]
        checks.check_grads_close(got, want, rtol=1e-12, atol=1e-12 * n)


@needs_gloo
def test_pitfalls_ddp_ranks_spawned_as_in_a_notebook_each_return_their_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the session forks its ranks from a forkserver (tests/conftest.py), their parent; a
    # process that never asked for one, a notebook, spawns them: this process is their parent
    monkeypatch.setattr(_spawn, "_method", "spawn")
    assert _spawn.spawn(ddp_support.sums_ranks, WORLD) == [
        (r, sum(range(WORLD)), os.getpid()) for r in range(WORLD)
    ]
    assert multiprocessing.active_children() == []


@needs_gloo
def test_pitfalls_ddp_dead_and_failing_ranks_are_named_and_none_is_left_running() -> None:
    # rank 1 dies by SIGKILL, rank 0 raises: both are named, the signal first, and rank 0's own
    # traceback is chained to the error the parent raises
    with pytest.raises(
        _spawn.DistributedFailure,
        match=r"^rank 1 was killed by SIGKILL; rank 0 raised ValueError: rank 0 refuses; "
        r"all ranks were ended$",
    ) as info:
        started = _spawn.start(ddp_support.fails_both_ways, WORLD)
        started.join(timeout=60)
    traceback = info.value.tracebacks[0]
    assert traceback.startswith("Traceback") and "ValueError: rank 0 refuses" in traceback
    assert multiprocessing.active_children() == []
    # nor is a file: torch's error file of each rank, read for the message, is removed
    assert [path for path in started.context.error_files if os.path.exists(path)] == []


@needs_gloo
def test_pitfalls_ddp_a_hung_group_times_out_and_leaves_no_process() -> None:
    with pytest.raises(_spawn.DistributedFailure, match=r"^timed out after 1 s with ranks "):
        _spawn.spawn(ddp_support.hangs, WORLD, 600.0, timeout=1)
    assert multiprocessing.active_children() == []


@needs_gloo
def test_pitfalls_ddp_a_rank_ends_on_ctrl_c_as_the_signal_not_an_exception() -> None:
    # an exception would wait for the collective's 30 s timeout in the others (measured: a
    # terminal's Ctrl-C during `python -m linreg pitfalls` took 31.5 s to return, 3 runs in 4)
    with pytest.raises(_spawn.DistributedFailure, match=r"^rank 0 was killed by SIGINT; "):
        _spawn.spawn(ddp_support.interrupted, WORLD, timeout=60)
    assert multiprocessing.active_children() == []


@needs_gloo
def test_pitfalls_ddp_groups_still_running_are_ended_when_their_parent_is_interrupted() -> None:
    started = _spawn.start(ddp_support.hangs, WORLD, 600.0)
    _spawn.end_all()
    with pytest.raises(_spawn.DistributedFailure, match=r"^rank 0 was killed by SIGKILL; "):
        started.join(timeout=60)
    assert multiprocessing.active_children() == []
