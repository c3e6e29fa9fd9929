"""One input validator for tensor shapes, used by every op and paper module.

A shape is written as space-separated dimensions, e.g. ``"B C H W"``, ``"* 1 H W"``,
``"B K 1 H W"`` or ``"* C:1|3 H W"``:

* a name (``B``, ``H`` ...): any size;
* a number: exactly that size;
* ``name:a|b``: one of the listed sizes (shown as ``name``);
* a leading ``*``: any number of leading dimensions (also none).

Lower bounds on named dimensions are keyword arguments (``K=2``: at least two sources).
Errors name the argument and say what was expected: ``TypeError`` for a non-tensor,
``ValueError`` for a wrong shape.
"""
from __future__ import annotations

from torch import Tensor


def _parse(spec: str) -> tuple[bool, list[tuple[str, tuple[int, ...] | None]]]:
    tokens = spec.split()
    star = bool(tokens) and tokens[0] == "*"
    dims = []
    for tok in tokens[1:] if star else tokens:
        label, _, choice = tok.partition(":")
        if tok.isdigit():
            dims.append((tok, (int(tok),)))
        elif choice:
            dims.append((label, tuple(int(v) for v in choice.split("|"))))
        else:
            dims.append((label, None))
    return star, dims


def check_shape(x: Tensor, name: str, spec: str, **at_least: int) -> None:
    """Raise unless ``x`` is a tensor of shape ``spec`` (see the module docstring).

    Args:
        x: the value to check.
        name: the argument's name, used in the message.
        spec: the expected shape, e.g. ``"B K 1 H W"``.
        **at_least: minimum sizes of named dimensions, e.g. ``K=2``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong number of dimensions, a fixed size or choice not met, or a minimum not reached.

    Example:
        >>> import torch
        >>> check_shape(torch.zeros(2, 3, 1, 8, 8), "sources", "B K 1 H W", K=2)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    star, dims = _parse(spec)
    shown = ", ".join(["*"] * star + [label for label, _ in dims])
    extra = [f"{label} in {choice}" for label, choice in dims if choice and len(choice) > 1 and not label.isdigit()]
    expected = f"{name} must have shape [{shown}]" + (f" with {', '.join(extra)}" if extra else "")
    n = len(dims)
    if x.dim() < n if star else x.dim() != n:
        raise ValueError(f"{expected}, got {tuple(x.shape)}")
    sizes = x.shape[x.dim() - n :]
    for (label, choice), size in zip(dims, sizes):
        if choice is not None and size not in choice:
            raise ValueError(f"{expected}, got {tuple(x.shape)}")
        if label in at_least and size < at_least[label]:
            raise ValueError(f"{name} needs {label} >= {at_least[label]} on that dimension, got {label} = {size} "
                             f"(shape {tuple(x.shape)})")
