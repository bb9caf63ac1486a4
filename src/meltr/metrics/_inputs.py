"""Input checks shared by the metrics: every error names the argument at fault and how to fix the call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # numpy array, torch tensor or (nested) sequence of numbers


def to_numpy(values: ArrayLike) -> np.ndarray:
    """``values`` as a numpy array; tensors are detached and moved to the CPU (bf16/fp16 widened to fp32)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_floating_point() and values.dtype not in (torch.float32, torch.float64):
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def float_vector(values: ArrayLike, name: str, *, allow_inf: bool = False) -> np.ndarray:
    """A non-empty, NaN-free float64 vector.

    ``[N]`` and ``[N, 1]`` (a regression head's usual output) are accepted; anything else is an error.

    Raises:
        ValueError: naming ``name`` if the input is empty, of another shape, not numeric, NaN or infinite.
    """
    array = to_numpy(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be a vector of shape [N] (or [N, 1]), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; the metric needs at least one sample")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    check_finite(array, name, allow_inf=allow_inf)
    return array


def check_finite(array: np.ndarray, name: str, *, allow_inf: bool = False) -> None:
    """Raise a ``ValueError`` naming ``name`` and the first bad position if ``array`` holds NaN (or inf)."""
    bad = np.isnan(array) if allow_inf else ~np.isfinite(array)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        where = position[0] if len(position) == 1 else position
        kind = "NaN" if allow_inf else "NaN or infinite"
        raise ValueError(f"{name} holds {kind} values ({int(bad.sum())} of them, the first at {where})")


def check_same_length(**named: Sequence[Any] | np.ndarray) -> int:
    """The common length of the named inputs; a ``ValueError`` listing every length otherwise."""
    lengths = {name: len(values) for name, values in named.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"inputs disagree on the number of samples: {listed}")
    return next(iter(lengths.values()))


def label_list(values: ArrayLike, name: str) -> list[Any]:
    """A non-empty flat list of labels (strings or numbers), with NaN rejected.

    Raises:
        ValueError: naming ``name`` if the input is empty, not one-dimensional, holds NaN, or mixes strings
            with numbers.
    """
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of labels, got a single string {values!r}")
    if isinstance(values, torch.Tensor | np.ndarray):
        array = to_numpy(values)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
        items = array.tolist()
    else:
        items = list(values)
    if not items:
        raise ValueError(f"{name} is empty; the metric needs at least one sample")
    is_text = [isinstance(item, str) for item in items]
    if any(is_text) and not all(is_text):
        first = is_text.index(not is_text[0])
        raise ValueError(
            f"{name} mixes strings and non-strings (item 0 is {items[0]!r}, item {first} is {items[first]!r})"
        )
    for index, item in enumerate(items):
        if not isinstance(item, str | int | float | np.integer | np.floating | np.bool_):
            raise ValueError(f"{name}[{index}] must be a string or a number, got {type(item).__name__}")
        if isinstance(item, float | np.floating) and math.isnan(item):
            raise ValueError(f"{name}[{index}] is NaN")
    return items


def percent(fraction: float) -> float:
    """A fraction in [0, 1] as the percentage the papers print."""
    return 100.0 * float(fraction)
