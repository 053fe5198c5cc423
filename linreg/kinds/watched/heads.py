"""A loss's head: the params nearest its input in its graph (a task's last layer), and the piece
of that layer's output the loss read, where it read columns of it (tasks that are two columns
of one Linear). Losses of one function on heads of their own are tasks, each a term
(terms.on_heads); the watch numbers heads as backward() reaches their losses (number).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

# a piece of an output: (its dim, the output's size there or -1 where unknown, its indices)
Piece = tuple[int, int, frozenset[int]]

# what may stand between a loss's input and the slice of an output it read: a reshape or copy
_PASSED = frozenset({"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
                     "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
                     "UnsqueezeBackward0", "CloneBackward0", "ToCopyBackward0"})  # fmt: skip
_SLICES = frozenset({"SliceBackward0", "SelectBackward0", "UnbindBackward0", "SplitBackward0",
                     "SplitWithSizesBackward0"})  # fmt: skip


@dataclass
class Head:
    """A head the watch met: its params (ids), the pieces of an output its losses read (None:
    the whole of one), and the datasets their targets came from."""

    params: set[int] = field(default_factory=set)
    pieces: set[Piece | None] = field(default_factory=set)
    sources: set[int | None] = field(default_factory=set)

    def apart(self, piece: Piece | None, source: int | None) -> bool:
        """Return whether a loss that reaches this head's params is another task's all the
        same: it read columns of their output that none of this head's losses read, on
        another dataset's batch (tasks from loaders of their own on columns of one Linear).
        Columns of one batch's output stay one objective, as they were (targets of one row)."""
        return (
            piece is not None
            and None not in self.pieces
            and all(_disjoint(piece, p) for p in self.pieces if p is not None)
            and source is not None
            and source not in self.sources
        )


def number(
    heads: dict[int, Head], params: AbstractSet[int], piece: Piece | None, src: int | None
) -> int:
    """Return the number of a loss's head, 0 for none (no params): a head that shares a param
    with one met before is that one (a tied decoder; experts as the last layer, reached as each
    batch's rows were routed), unless the loss is apart from it (Head.apart); numbered in the
    order backward() first reached them (called for each loss a backward() reaches: one no
    backward() reaches, an evaluation's with grad on, changes no record). The head's record
    takes the loss's params, piece and source in."""
    if not params:
        return 0
    met = [
        n for n, h in heads.items() if not h.params.isdisjoint(params) and not h.apart(piece, src)
    ]
    found = min(met, default=len(heads) + 1)
    record = heads.setdefault(found, Head())
    record.params |= params
    record.pieces.add(piece)
    record.sources.add(src)
    return found


def head(node: Any, limit: int = 4096) -> frozenset[int]:
    """Return the ids of the leaves that require grad nearest a node in its graph (the fewest
    nodes away: under a loss's input, the last layer's bias or weight, a task's head), or none
    where none lies within `limit` nodes."""
    level: list[Any] = [node]
    seen: set[int] = set()
    while level and len(seen) < limit:
        found = frozenset(
            id(n.variable) for n in level if isinstance(getattr(n, "variable", None), Tensor)
        )
        if found:
            return found
        below = []
        for n in level:
            if n is not None and id(n) not in seen:
                seen.add(id(n))
                below += [m for m, _ in n.next_functions if m is not None]
        level = below
    return frozenset()


def piece(t: Any) -> Piece | None:
    """Return the piece of an output a loss's input is, where it is one fixed slice of it along
    a dim other than the first (the rows), through reshapes alone: `out[:, :1]`, `out[:, 1]`,
    `out.unbind(1)[k]`, `out.chunk(2, 1)[k]`; else None (the whole output, rows picked by a
    mask, slices of slices)."""
    if not isinstance(t, Tensor) or t.grad_fn is None:
        return None
    node: Any = t.grad_fn
    nr, reshaped = t.output_nr, False
    while type(node).__name__ in _PASSED:
        node, nr = node.next_functions[0]
        reshaped = True
        if node is None:
            return None
    if type(node).__name__ not in _SLICES:
        return None
    below = node.next_functions[0][0]
    if below is None or type(below).__name__ in _PASSED | _SLICES:
        return None  # a slice of a reshape or of another slice: its dims are not the output's
    try:
        found = _of(node, nr, None if reshaped else t.ndim + 1)
    except (TypeError, AttributeError, IndexError, ZeroDivisionError):
        return None  # a slice saved as no number (aten.slice(out, 1, None, 2)): not read
    return found if found is not None and found[0] != 0 else None


def _of(node: Any, nr: int, unbound: int | None) -> Piece | None:
    """Return the piece of its input a slicing node's output `nr` is (unbound: the input's
    dims where an unbind's output is the loss's input itself, else unknown: None)."""
    kind = type(node).__name__
    sizes = tuple(getattr(node, "_saved_self_sym_sizes", ()))
    dims = len(sizes) if sizes else unbound
    if dims is None:
        return None
    dim = _signed(node._saved_dim) % dims
    size = int(sizes[dim]) if sizes else -1
    if kind == "SliceBackward0":
        step = slice(_signed(node._saved_start), _signed(node._saved_end), node._saved_step)
        return dim, size, frozenset(range(size)[step])
    if kind == "SelectBackward0":
        return dim, size, frozenset({_signed(node._saved_index) % size})
    if kind == "UnbindBackward0":
        return dim, size, frozenset({nr})
    if kind == "SplitBackward0":
        each = int(node._saved_split_size)
        return dim, size, frozenset(range(nr * each, min((nr + 1) * each, size)))
    bounds = [0]
    for s in node._saved_split_sizes:
        bounds.append(bounds[-1] + int(s))
    return dim, size, frozenset(range(bounds[nr], bounds[nr + 1]))


def _signed(value: int) -> int:
    """Return an int64 autograd saved as unsigned (-1 as 2 ** 64 - 1) as it was."""
    return value - 2**64 if value >= 2**63 else value


def _disjoint(a: Piece, b: Piece) -> bool:
    """Return whether two pieces are apart: along the same dim of outputs of the same size,
    no index in common."""
    return a[0] == b[0] and a[1] == b[1] and a[2].isdisjoint(b[2])
