"""Any PyTorch training loop, as it is written, checked on rows it can be judged on.

The audit hands the loop what its parameters ask for (`contract`, in this folder: a fresh model
from the user's factory, a DataLoader, a dataset or a batch function over the audit's rows, an
optimizer or none, a number of epochs or of steps) and watches it run (`hooks`): every
optimizer step over the model's parameters, its lr held at 0, and the rows fed to the model
before it. The rows are copies of one example and of a contrast row with a
different gradient, so how a step weighs its rows shows. Each step's gradient is judged
(`verdicts`) against a reference (`references`): the mean (or, for
`reduction="sum"`, the sum) over the rows it consumed of each row's own gradient, from the
loss the user names, the model's own loss where its output carries one, or else the usual loss
for the labels (for token labels: cross-entropy after a causal shift, or over every token),
confirmed against the loop on one row at a time. Labels the loop takes out of a dict batch
before the forward, to compute its own loss, are read from the rows the audit handed out.

Dropout modules are set to p = 0 and batch norms held in eval mode, so no row's output depends
on another's; a forward that is still random, or rows that still interact, is refused before
any work, as is a loop that moves the parameters outside `optimizer.step()`.

One concept per module: `contract` (what the loop asks for, by name), `settings` (what the
audit is told), `batching` (a drawn Batching), `rows` (the example and its contrast row),
`held` (the model held still), `shared` (one audit's runs, shared by its properties), `hooks`
(the hooks that watch), `watcher` (what each hook does, and the state they share; a probe's
batch an update set aside: `set_aside`), `forwards`
(the forward hooks: what each forward was fed), `calls` (each forward pass: what it was fed),
`ledger` (what the loop did: its updates and the run), `one_run` (one run at lr 0), `known`
(what is known of each loop, by its function), `fetches` (the audit loader's batches, as the
loop fetches them), `probe` (the probe that checks a loop once, and the kind), `outputs` (what
a model's output holds, a forward that can be judged), `labels` (each row's labels, fed or
held, and the targets its loss counts), `references` (each row's own gradient), `measure`,
`judge` and `verdicts` (whether each update applied what it should; a short last batch left
untrained: `shorts`), `weights` (an update as
weights on its rows' own gradients), `own_loops` (linreg's correct loops).
"""

from __future__ import annotations

from linreg.kinds.training_loop import contract
from linreg.kinds.training_loop.batching import (
    WIDE,
    Batching,
    count_of,
    describe,
    expected_steps,
    first_runs,
    wide_run,
)
from linreg.kinds.training_loop.calls import STEP_COUNT, Call, copied, tensors_in
from linreg.kinds.training_loop.held import (
    held_still,
    models_restored,
)
from linreg.kinds.training_loop.hooks import Watch, watching
from linreg.kinds.training_loop.judge import (
    Judged,
    carries,
    judge,
    means_of_means,
    miscount,
    summed_means,
    unequal_weights,
    want_of,
)
from linreg.kinds.training_loop.known import asks_of, limit_of
from linreg.kinds.training_loop.labels import RowLoss, counted, token_labels
from linreg.kinds.training_loop.ledger import (
    Observed,
    Step,
    blind_steps,
    flat,
    flat_loss,
    not_finite,
)
from linreg.kinds.training_loop.measure import (
    clipping,
    close,
    factor,
    near,
    tolerance,
)
from linreg.kinds.training_loop.one_run import (
    build_model,
    full_step_rows,
    observe,
    raised,
    run_at_zero_lr,
)
from linreg.kinds.training_loop.outputs import check_model, own_loss, prediction
from linreg.kinds.training_loop.own_loops import (
    CLASSIFIER,
    LINEAR,
    TRAINING_LOOPS,
    fit,
    fit_micro_batches,
    linear,
    mlp,
)
from linreg.kinds.training_loop.probe import KIND, build, framework_target
from linreg.kinds.training_loop.references import references
from linreg.kinds.training_loop.row_gradients import Reference, row_gradient, row_loss_for
from linreg.kinds.training_loop.rows import (
    IGNORE_INDEX,
    INPUT_KEYS,
    LABEL_KEYS,
    Example,
    as_example,
    contrast,
    fewer_targets,
    input_key,
    label_key,
    labels_of,
    loss_of,
    rows_of,
)
from linreg.kinds.training_loop.settings import (
    EXAMPLE_HELP,
    FLOOR,
    MOST_DRAWN,
    SIGNATURE,
    TrainingLoopOptions,
    checked_example,
    default_optimizer,
    example_option,
    options_of,
    reduced,
)
from linreg.kinds.training_loop.shared import runs_shared, sharing, unshared
from linreg.kinds.training_loop.shorts import dropped_shorts, skipped_own_shorts, unfed_short
from linreg.kinds.training_loop.verdicts import (
    NO_KNOWN,
    Excuse,
    compare,
    crosses,
    full_rows,
    undecided,
    unreached_why,
    unscaled,
)
from linreg.kinds.training_loop.wanted import (
    Wanted,
    beside_a_sum,
    notes,
    unjudged_beside_a_sum,
    unreferenced,
    unreferenced_error,
    wanted,
)
from linreg.kinds.training_loop.watcher import Watcher
from linreg.kinds.training_loop.weights import weights_of

__all__ = [
    "CLASSIFIER",
    "EXAMPLE_HELP",
    "FLOOR",
    "IGNORE_INDEX",
    "INPUT_KEYS",
    "KIND",
    "LABEL_KEYS",
    "LINEAR",
    "MOST_DRAWN",
    "NO_KNOWN",
    "SIGNATURE",
    "STEP_COUNT",
    "TRAINING_LOOPS",
    "WIDE",
    "Batching",
    "Call",
    "Example",
    "Excuse",
    "Judged",
    "Observed",
    "Reference",
    "RowLoss",
    "Step",
    "TrainingLoopOptions",
    "Wanted",
    "Watch",
    "Watcher",
    "as_example",
    "asks_of",
    "beside_a_sum",
    "blind_steps",
    "build",
    "build_model",
    "carries",
    "check_model",
    "checked_example",
    "clipping",
    "close",
    "compare",
    "contract",
    "contrast",
    "copied",
    "count_of",
    "counted",
    "crosses",
    "default_optimizer",
    "describe",
    "dropped_shorts",
    "example_option",
    "expected_steps",
    "factor",
    "fewer_targets",
    "first_runs",
    "fit",
    "fit_micro_batches",
    "flat",
    "flat_loss",
    "framework_target",
    "full_rows",
    "full_step_rows",
    "held_still",
    "input_key",
    "judge",
    "label_key",
    "labels_of",
    "limit_of",
    "linear",
    "loss_of",
    "means_of_means",
    "miscount",
    "mlp",
    "models_restored",
    "near",
    "not_finite",
    "notes",
    "observe",
    "options_of",
    "own_loss",
    "prediction",
    "raised",
    "reduced",
    "references",
    "row_gradient",
    "row_loss_for",
    "rows_of",
    "run_at_zero_lr",
    "runs_shared",
    "sharing",
    "skipped_own_shorts",
    "summed_means",
    "tensors_in",
    "token_labels",
    "tolerance",
    "undecided",
    "unequal_weights",
    "unfed_short",
    "unjudged_beside_a_sum",
    "unreached_why",
    "unreferenced",
    "unreferenced_error",
    "unscaled",
    "unshared",
    "want_of",
    "wanted",
    "watching",
    "weights_of",
    "wide_run",
]
