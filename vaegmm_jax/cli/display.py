"""What the commands print: numbers, aligned tables, thresholds."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["PROG", "say", "fmt", "table", "short_list", "describe_threshold"]

PROG = "vaegmm"


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, indent: str = "  ") -> str:
    """Rows as aligned text: the first column left-aligned, the others right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    if header:
        cells = [list(header)] + cells
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for k, r in enumerate(cells):
        lines.append(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if header and k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def short_list(names: Sequence[str] | None, n: int = 8) -> str:
    if not names:
        return "-"
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else f" ({len(names)})")


def describe_threshold(info: dict | None, value) -> str:
    """The threshold and how it was chosen (``info``: the model card's threshold entry)."""
    if value is None:
        return "none"
    if not info:
        return f"{fmt(float(value))}"
    if info.get("method") == "contamination":
        how = f"contamination {info['contamination']:g}: {info['percentile']:g}th percentile"
    elif info.get("method") == "percentile":
        how = f"{info['percentile']:g}th percentile"
    else:
        how = str(info.get("method"))
    on = info.get("computed_on")
    return f"{fmt(float(value))} ({how}" + (f" of the scores of {on})" if on else ")")
