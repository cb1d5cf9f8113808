"""How the ``litedurable`` command writes and reads times, durations, tables and JSON.

* Instants are ISO 8601 with their zone, one style everywhere: ``2026-12-06T02:46:25+00:00``
  in tables (seconds), with microseconds in JSON. Never an epoch float, never a bare space.
* Durations are said as a person says them: ``3 h 12 min``, ``in 3 h 12 min``, ``2 min ago``.
* Table cells keep their columns: a value longer than its column is cut in the middle, with an
  ellipsis, keeping its end (the JSON output has it whole).
* Ages on the command line (``30d``, ``12h``, ``90m``, ``45s`` or plain seconds) and instants
  (ISO 8601, or an age meaning "that long ago").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["age", "cell", "duration", "instant", "iso", "json_text", "moment", "relative",
           "table"]

_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(d|h|m|min|s)?\s*", re.IGNORECASE)
_MAX_AGE = 1000 * 365.25 * 86400.0
"""The largest age: that long before now is still an instant a datetime can hold."""
_AGE_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0, None: 1.0}


def instant(epoch: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, tz=UTC)


def iso(moment: datetime | float | None, *, precise: bool = False) -> str:
    """An instant as ISO 8601 with its zone (``-`` for None); ``precise``: microseconds."""
    if moment is None:
        return "-"
    if not isinstance(moment, datetime):
        moment = instant(moment)
    return moment.isoformat(timespec="microseconds" if precise else "seconds")


def duration(seconds: float) -> str:
    """A length of time in at most two units: ``0 s``, ``45 s``, ``2 min 30 s``, ``3 h 12 min``,
    ``2 d 7 h``; under a second, in milliseconds (``120 ms``)."""
    seconds = abs(seconds)
    if 0 < seconds < 1:
        return f"{int(seconds * 1000)} ms"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in _UNITS:
        if whole >= size or (unit == "s" and not parts):
            parts.append(f"{whole // size} {unit}")
            whole %= size
            if len(parts) == 2 or not whole:
                break
        elif parts:  # "2 h 0 min" says nothing "2 h" does not
            break
    return " ".join(parts)


def relative(moment: datetime | float | None, now: float) -> str:
    """``in 3 h 12 min`` or ``2 min ago`` (``-`` for None), from ``now`` (epoch seconds)."""
    if moment is None:
        return "-"
    epoch = moment.timestamp() if isinstance(moment, datetime) else moment
    delta = epoch - now
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


def age(text: str) -> float:
    """An age: ``30d``, ``12h``, ``90m`` (or ``90min``), ``45s``, or plain seconds; >= 0.

    Raises:
        ValueError: anything else (negative, NaN, infinite, a unit it does not know).
    """
    match = _AGE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an age: write 30d, 12h, 90m, 45s or seconds "
                         "(>= 0)")
    value = float(match.group(1)) * _AGE_UNITS[(match.group(2) or "").lower() or None]
    if not math.isfinite(value) or value > _MAX_AGE:
        raise ValueError(f"{text!r} is too large an age (at most 1000 years)")
    return value


def moment(text: str, now: float) -> float:
    """An instant given on the command line, as epoch seconds: ISO 8601 (a date, or a date
    and time; UTC when it names no zone) or an age meaning that long before ``now``."""
    try:
        return now - age(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 instant (2026-12-01, "
                         "2026-12-01T08:00:00+01:00) nor an age (1d, 3h, 30m, 45s)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def cell(value: object, width: int) -> str:
    """``value`` as text in exactly ``width`` characters: padded, or cut with an ellipsis in
    the middle, keeping its end too: the children of a long id differ only there (``…/2``)."""
    text = " ".join(str(value).split()) if value is not None else "-"
    if len(text) > width:
        tail = max(width - 1, 0) // 3
        return text[:max(width - 1 - tail, 0)] + "…" + (text[-tail:] if tail else "")
    return text.ljust(width)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          widths: Sequence[int]) -> list[str]:
    """Lines of a table: each column as wide as its widest value or header, at most its
    ``widths`` entry (longer values are cut, see ``cell``); the last column is never cut."""
    texts = [[" ".join(str("-" if v is None else v).split()) for v in row] for row in rows]
    sized = [min(cap, max([len(headers[i]), *(len(r[i]) for r in texts)]))
             for i, cap in enumerate(widths)]
    lines = []
    for row in [list(headers), *texts]:
        cells = [cell(v, w) for v, w in zip(row, sized, strict=False)]
        lines.append("  ".join([*cells, *row[len(sized):]]).rstrip())
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as JSON: instants as ISO 8601 with their zone, anything else by ``str``."""
    separators = None if indent is not None else (",", ":")
    return json.dumps(value, indent=indent, default=_plain, ensure_ascii=False,
                      separators=separators)
