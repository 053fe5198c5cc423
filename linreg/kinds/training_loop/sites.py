"""Where the code under audit made a call: the functions on its stack (`site`), and whether a
function's name says it evaluates (`evaluates`): a forward made in such a function that never
trained, on data it drew itself, is the loop's own (feeds.py)."""

from __future__ import annotations

import functools
import os
import re
import sys
from types import CodeType, FrameType

import torch

Site = tuple[CodeType, ...]

_TORCH = os.path.dirname(torch.__file__) + os.sep  # a module's call, a checkpoint, autocast
_AUDIT = os.path.dirname(os.path.dirname(os.path.dirname(__file__))) + os.sep  # linreg's


def site(most: int = 16) -> Site:
    """Return where the code under audit made the call being watched: the functions (code
    objects) of its frames, innermost first, from the call to the loop the audit called
    (at most `most`), torch's passed over wherever they are (a wrapper module, a checkpoint)
    and the audit's own up to the first of the loop's."""
    codes: list[CodeType] = []
    f: FrameType | None = sys._getframe(1)
    while f is not None and len(codes) < most:
        file = f.f_code.co_filename
        if file.startswith(_AUDIT):
            if codes:  # back in the audit, past the loop's outermost frame
                break
        elif not file.startswith(_TORCH):
            codes.append(f.f_code)
        f = f.f_back
    return tuple(codes)


# the words of a function's name that say it evaluates (estimate_loss, validate, log_sample,
# computeAccuracy): whole words, or words that begin so
_EVALUATES = frozenset({"val", "acc", "log", "test", "score", "probe", "check", "show"})
_EVALUATES_STEMS = (
    "eval", "valid", "estimat", "predict", "infer", "metric", "accura", "sampl", "generat",
    "monitor", "report", "sanity", "debug", "plot", "print", "summar", "inspect", "visuali",
    "perplex", "measur", "track", "tests", "logg", "decod",
)  # fmt: skip


@functools.cache
def evaluates(code: CodeType) -> bool:
    """Return True if a function's name says it evaluates (lambdas and comprehensions say
    nothing: they are their caller's)."""
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", code.co_name).lower())
    return not code.co_name.startswith("<") and any(
        w in _EVALUATES or w.startswith(_EVALUATES_STEMS) for w in words
    )
