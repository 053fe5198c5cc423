"""The kinds of target a user can audit, one module each, and the harness that runs them.

Each module here holds one kind: its `KIND` record (name, signature, options, how a user's
function becomes a target) and what its properties need to call and observe it
(`iterator`, `update_step`, `loss`, `loop`, `epoch_loss`, `training_loop`). Shared by all:
`base` (Kind, Options, Target), `guards` (exceptions and RNGs), `late` (linreg's own functions,
swappable), `runs` (runs of linreg's training signature), `twin_rows` (loop examples with a
closed form). `KINDS` is the registry that linreg.audit, the command line, the pytest plugin
and the README's table of kinds are made from: adding a kind is adding its module here, and
its name to linreg._kind_names (the plugin's help reads the names there, without torch).
"""

from __future__ import annotations

from linreg import _kind_names as names
from linreg.kinds import epoch_loss, iterator, loop, loss, training_loop, update_step
from linreg.kinds.base import Kind, Target, TargetError
from linreg.kinds.frameworks import FRAMEWORKS
from linreg.kinds.options import Options

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        iterator.KIND,
        update_step.KIND,
        loss.KIND,
        loop.KIND,
        epoch_loss.KIND,
        training_loop.KIND,
        *(f.kind() for f in FRAMEWORKS),
    )
}
if tuple(KINDS) != names.NAMES:  # the plugin's help reads the names without the kinds
    raise ImportError(
        f"linreg._kind_names.NAMES {names.NAMES} is not the registry's {tuple(KINDS)}"
    )

# The kinds only linreg's own code is checked as: not audited, not on the command line. Every
# property's kind is one of these or of KINDS (tests/test_pitfalls_catalogue.py checks it), so
# a misspelt kind cannot leave a property silently unaudited.
INTERNAL_KINDS: dict[str, str] = {
    "train": "a training function of linreg.train's signature",
    "concise": "nn.Linear + nn.MSELoss + optim.SGD run at a reduction (linreg.concise)",
    "accumulate-grad": "a gradient accumulated over micro-batches (linreg.accumulate)",
    "accumulate-losses": "one update an epoch from the batches' losses (linreg.accumulate)",
    "init": "parameters made by an initialisation (linreg.model.init_params)",
    "evaluation": "a full-data loss evaluation (linreg.train.full_loss)",
    "sampler-epochs": "a DistributedSampler's orders over epochs (linreg.distributed)",
    "ddp-worker": "a DDP training run inside the ranks (linreg.pitfalls._ddp)",
}

__all__ = ["INTERNAL_KINDS", "KINDS", "Kind", "Options", "Target", "TargetError"]
