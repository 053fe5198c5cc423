"""Real training code watched as it runs (`python -m linreg watch`): records.py (what it did:
its losses, micro-batches and updates as read; kept.py the numbers kept), graphs.py (how an
autograd graph is read), closing.py and applied.py (how an update is read as numbers when its
optimizers step), observer.py (what the watcher does at each seam, and what it puts back;
clips.py its clip and loss-scaler hooks; observed.py what it holds), seams.py (torch's seams
the watcher goes through, and `watching()`, which puts each back)."""

from linreg.kinds.watched.applied import scaled_by
from linreg.kinds.watched.closing import close
from linreg.kinds.watched.kept import Update, Watched
from linreg.kinds.watched.observed import MOST
from linreg.kinds.watched.passes import LONGEST
from linreg.kinds.watched.records import Enough, LossCall, MicroBatch, Open
from linreg.kinds.watched.seams import LOSSES, watching

__all__ = [
    "LONGEST",
    "LOSSES",
    "MOST",
    "Enough",
    "LossCall",
    "MicroBatch",
    "Open",
    "Update",
    "Watched",
    "close",
    "scaled_by",
    "watching",
]
