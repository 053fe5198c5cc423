"""One conversion to strict JSON: every report, verdict and figure goes through `plain`.

Tensors become nested lists (with their grads, if set), dtypes their names, dataclasses and
named tuples dicts, and every non-finite float None: the output is standard JSON
(`json.dumps(..., allow_nan=False)` accepts it) everywhere, the CLI, the audit and the report.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy
import torch


def plain(value: Any) -> Any:
    """Return value as plain, strict-JSON data (non-finite numbers as None)."""
    if isinstance(value, torch.Tensor):
        data = _tolist(value)
        return data if value.grad is None else {"value": data, "grad": _tolist(value.grad)}
    if isinstance(value, torch.dtype):
        return str(value)
    shown = getattr(value, "__plain__", None)
    if shown is not None and not isinstance(value, type):  # a record that says how it shows
        return plain(shown())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: keep its names
        return plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


def _tolist(t: torch.Tensor) -> Any:
    """Return t as nested lists; float32 values as their shortest float32 repr (0.2, not
    0.20000000298023224), which reads back to the same float32; non-finite values as None."""
    data = t.detach().tolist()
    single = t.dtype == torch.float32

    def short(x: Any) -> Any:
        if isinstance(x, list):
            return [short(v) for v in x]
        if isinstance(x, float):
            if not math.isfinite(x):
                return None
            return float(str(numpy.float32(x))) if single else x
        return x

    return short(data)
