"""Real training code watched as it runs (`python -m linreg watch`): records.py (what it did:
its losses, micro-batches and updates), observer.py (what the watcher does at each seam, and
what it puts back), seams.py (torch's seams the watcher goes through, and `watching()`, which
puts each back)."""

from linreg.kinds.watched.observer import LONGEST, MOST
from linreg.kinds.watched.records import (
    Enough,
    LossCall,
    MicroBatch,
    Open,
    Update,
    Watched,
    close,
    scaled_by,
)
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
