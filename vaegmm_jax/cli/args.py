"""Argument parsing: a parser that reports usage errors in one line, and argument types that
refuse unusable numbers while parsing, before any work."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from vaegmm_jax.cli.errors import InputError

__all__ = [
    "Parser",
    "number_arg",
    "percentile_arg",
    "fraction_arg",
    "share_arg",
    "positive_int",
    "positive_float",
    "finite_float",
    "check_percentile",
    "check_fraction",
    "check_positive_int",
]


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InputError(f"{message} (see '{self.prog} --help')")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def number_arg(low: float, high: float, closed: bool, what: str) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] (``closed``) or (low, high), refused at parsing,
    before any training (nan and inf never pass)."""
    interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"

    def parse(text: str) -> float:
        value = _float(text)
        if not (low <= value <= high if closed else low < value < high):
            raise argparse.ArgumentTypeError(f"must be {what} in {interval}, got {text}")
        return value

    return parse


#: --threshold-perc, --contamination and the demo's --train-fraction
percentile_arg = number_arg(0.0, 100.0, True, "a percentile")
fraction_arg = number_arg(0.0, 1.0, False, "an outlier fraction")
share_arg = number_arg(0.0, 1.0, False, "a share")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    value = _float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


# the same checks for values from a --config file (JSON numbers)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_percentile(value: Any, name: str) -> float:
    """A percentile in [0, 100]; InputError naming the setting otherwise."""
    if not _is_number(value) or not 0.0 <= float(value) <= 100.0:
        raise InputError(f"{name} must be a number in [0, 100], got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    """An outlier fraction in the open interval (0, 1); InputError naming the setting otherwise."""
    if not _is_number(value) or not 0.0 < float(value) < 1.0:
        raise InputError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (a JSON 3 or 3.0); InputError naming the setting otherwise."""
    if not _is_number(value) or float(value) != int(value) or int(value) < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
