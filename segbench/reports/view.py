"""The view model of every report: how a verdict, a band, a bound, an interval, a latency, a throughput,
a memory figure, a metric value, a change and an image count are spelled.

Each renderer (the rich terminal tables, the Markdown and HTML report, the PNG figures, ``segbench
compare``'s Markdown and terminal tables, the model registry) takes its strings from here and adds only
its own markup (rich styles, Markdown or HTML tables, matplotlib colours), so a value reads the same in
every one of them. The spellings follow the committed reports (``reports/*/report.md``):

- a missing number is ``-``; a missing interval, band or note is empty;
- latency ``44.18`` (ms), throughput ``22.3`` (images/s), memory ``981`` (MiB), speed-up ``3.85x``,
  relative change ``+4.4%``, p-value ``0.093``, achieved or peak ``0.052`` (TFLOP/s) and its share of
  the peak ``38.2%``;
- a task metric ``80.87`` (points), a deviation or change ``+0.000``, its interval ``[-0.017, -0.005]``,
  a band ``[-0.51, +1.00]`` (points) and a band edge ``-0.50``;
- a tensor statistic ``0.00061`` (``3.578e-07`` where five decimals would print a nonzero value as 0),
  its bound ``<=0.00100`` / ``>=0.99000`` (ASCII, no space);
- verdicts ``pass``, ``FAIL``, ``inconclusive`` (and ``baseline``, ``info`` for rows without one), with
  one tone each (``ok``, ``fail``, ``inconclusive``, ``info``) that the renderers colour;
- image counts ``32 (0 moved)``, and ``~120 images would decide`` for an inconclusive verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segbench.results.verdicts import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    band_of,
    images_of,
    interval_of,
    missing,
    number,
    verdict_of,
)

MISSING = "-"
AT_MOST, AT_LEAST = "<=", ">="
SPEEDUP_SIGN = "x"
MEMORY_UNIT = "MiB"

# Verdict words, and the two rows that carry no verdict of their own.
VERDICT_WORDS = {PASS: "pass", FAIL: "FAIL", INCONCLUSIVE: "inconclusive"}
BASELINE = "baseline"
INFO = "info"
# Tones: what a renderer colours (the HTML row class, a rich style, a figure colour).
OK_TONE, FAIL_TONE, INCONCLUSIVE_TONE, INFO_TONE = "ok", "fail", "inconclusive", "info"
TONES = (OK_TONE, FAIL_TONE, INCONCLUSIVE_TONE, INFO_TONE)
_TONE_OF_WORD = {"pass": OK_TONE, "FAIL": FAIL_TONE, "inconclusive": INCONCLUSIVE_TONE}

# Digits per quantity: task metrics are points (a 0.01-point resolution is far below any tolerance);
# deviations and their intervals get one more, as the bootstrap resolves them that finely.
POINTS_DIGITS, DELTA_DIGITS, BAND_DIGITS, STATISTIC_DIGITS = 2, 3, 2, 5


# -- numbers ------------------------------------------------------------------------------------------


def fixed(value: Any, digits: int = 2, *, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (a sign always with ``signed``); ``-`` when missing."""
    found = number(value)
    if found is None:
        return MISSING
    return f"{found:+.{digits}f}" if signed else f"{found:.{digits}f}"


def latency(ms: Any) -> str:
    """Milliseconds: ``44.18``."""
    return fixed(ms, 2)


def throughput(images_per_s: Any) -> str:
    """Images per second: ``22.3``."""
    return fixed(images_per_s, 1)


def memory(mib: Any) -> str:
    """MiB, whole: ``981``."""
    return fixed(mib, 0)


def speedup(ratio: Any) -> str:
    """How many times faster than the reference: ``3.85x``."""
    text = fixed(ratio, 2)
    return text if text == MISSING else text + SPEEDUP_SIGN


def tflops(value: Any) -> str:
    """TFLOP/s, three decimals (a 2-core CPU reaches tenths): ``0.052``."""
    return fixed(value, 3)


def peak_share(fraction: Any) -> str:
    """Achieved over peak FLOP/s as a percentage: ``38.2%``."""
    found = number(fraction)
    return MISSING if found is None else f"{100 * found:.1f}%"


def axis_number(value: float) -> str:
    """A tick label of a log axis: the shortest plain spelling (``0.5``, ``20``)."""
    return f"{value:g}"


def percent(change: Any) -> str:
    """A relative change (a fraction) as a signed percentage: ``+4.4%``."""
    found = number(change)
    return MISSING if found is None else f"{100 * found:+.1f}%"


def share(fraction: float) -> str:
    """A setting or a level given as a fraction, as a percentage: ``15%``, ``95%``."""
    return f"{100 * fraction:g}%"


def p_value(p: Any) -> str:
    """Two significant digits: ``0.093``, ``1.2e-07``."""
    found = number(p)
    return MISSING if found is None else f"{found:.2g}"


def count(value: Any) -> str:
    """A count (images, samples): ``32``; empty when missing."""
    found = number(value)
    return "" if found is None else str(int(found))


def points(value: Any, digits: int = POINTS_DIGITS) -> str:
    """A task metric in points: ``80.87``."""
    return fixed(value, digits)


def delta(value: Any, *, signed: bool = True) -> str:
    """A deviation or a change in points: ``-0.011``; unsigned (``0.800``) where the words say which
    way it went."""
    return fixed(value, DELTA_DIGITS, signed=signed)


def statistic(value: Any, *, signed: bool = False) -> str:
    """A tensor statistic (a relative error, an agreement): five decimals, ``0.00061``; a nonzero value
    that five decimals would print as zero in scientific notation, ``3.578e-07``, so it does not read as
    an exact match."""
    found = number(value)
    if found is None:
        return MISSING
    if found != 0 and abs(found) < 0.5 * 10**-STATISTIC_DIGITS:
        return f"{found:+.3e}" if signed else f"{found:.3e}"
    return fixed(found, STATISTIC_DIGITS, signed=signed)


def check_value(value: Any, level: Any) -> str:
    """A check's value: a task metric in points, a tensor row's statistic."""
    return statistic(value) if level == "tensor" else points(value)


def check_change(value: Any, level: Any) -> str:
    """A change of a check's value (or deviation) between runs, signed, spelled as its value is."""
    return statistic(value, signed=True) if level == "tensor" else delta(value)


def interval(low: Any, high: Any) -> str:
    """The interval of a deviation or change: ``[-0.017, -0.005]``; empty without one."""
    low, high = number(low), number(high)
    if low is None or high is None:
        return ""
    return f"[{low:+.{DELTA_DIGITS}f}, {high:+.{DELTA_DIGITS}f}]"


def band_edge(value: Any) -> str:
    """One edge of a band, points: ``-0.50``."""
    return fixed(value, BAND_DIGITS, signed=True)


def band(low: Any, high: Any) -> str:
    """The allowed deviation, points: ``[-0.51, +1.00]``; empty without one."""
    if number(low) is None or number(high) is None:
        return ""
    return f"[{band_edge(low)}, {band_edge(high)}]"


def bound(direction: str, limit: str) -> str:
    """``<=0.00100``: a formatted ``limit`` after its direction, ``<=`` / ``max`` (at most) or ``>=`` /
    ``min`` (at least); empty when the limit is missing."""
    if not limit or limit == MISSING:
        return ""
    return (AT_MOST if direction in (AT_MOST, "max") else AT_LEAST) + limit


# -- verdicts -----------------------------------------------------------------------------------------


def verdict_label(verdict: str | None) -> str:
    """``pass``, ``FAIL``, ``inconclusive``; ``info`` for a row that judges nothing."""
    return VERDICT_WORDS.get(verdict, INFO) if verdict is not None else INFO


def verdict_word(row: Mapping[str, Any]) -> str:
    """What a numerics row says, as one word: ``baseline``, ``pass``, ``FAIL``, ``inconclusive`` or
    ``info`` (a diagnosis, or an old row whose check did not run)."""
    if row.get("role") == "baseline":
        return BASELINE
    return verdict_label(verdict_of(row))


def tone(word: str) -> str:
    """The tone of a verdict word: ``ok``, ``fail``, ``inconclusive``, else ``info``."""
    return _TONE_OF_WORD.get(word, INFO_TONE)


def needed(images_needed: Any) -> str:
    """What an inconclusive verdict lacks: ``~120 images would decide``."""
    found = number(images_needed)
    return f"~{int(found)} images would decide" if found else "too few images to decide"


def verdict_note(row: Mapping[str, Any]) -> str:
    """The error of a row, or for an inconclusive verdict how many images would decide it."""
    if not missing(row.get("error")):
        return str(row["error"])
    if verdict_of(row) == INCONCLUSIVE:
        return needed(images_of(row)[1])
    return ""


def with_note(word: str, note: str) -> str:
    """``inconclusive (~120 images would decide)``: a verdict and what it needs saying."""
    return f"{word} ({note})" if note else word


def images(row: Mapping[str, Any]) -> str:
    """The images a check was judged on, and for a candidate how many of them its outputs moved:
    ``32 (0 moved)``; empty when the row does not say."""
    found, _, changed = images_of(row)
    text = count(found)
    if text and changed is not None and row.get("role") != "baseline":
        text += f" ({changed} moved)"
    return text


def limit_text(row: Mapping[str, Any]) -> str:
    """A task row's band ``[-0.50, +0.50]``; a tensor row's bound ``<=0.00100``; empty for a
    baseline."""
    if row.get("role") == "baseline":
        return ""
    if row.get("level") == "tensor":
        return bound(str(row.get("bound")), statistic(row.get("tolerance")))
    return band(*band_of(row))


def change_label(verdict: str, regressed: bool) -> str:
    """What compare makes of a cell or check: its verdict, in capitals when it regressed
    (``REGRESSION``, ``NOW FAILING``), as a failed check is ``FAIL``."""
    return verdict.upper() if regressed else verdict


def change_tone(verdict: str, *, regressed: bool, improved: bool) -> str:
    if regressed:
        return FAIL_TONE
    if improved:
        return OK_TONE
    return INCONCLUSIVE_TONE if verdict == INCONCLUSIVE else INFO_TONE


# -- names --------------------------------------------------------------------------------------------


def options_text(options: Any) -> str:
    """``k=v, k=v`` from a dict or its JSON text (empty for none)."""
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except ValueError:
            return options
    if not isinstance(options, Mapping):
        return "" if options is None else str(options)
    return ", ".join(f"{k}={v}" for k, v in options.items())


def backend_label(row: Mapping[str, Any]) -> str:
    """``torch`` or ``torch (channels_last=True)``: the backend plus its non-default options."""
    label = row.get("backend_label")
    if isinstance(label, str) and label:
        return label
    suffix = options_text(row.get("backend_options"))
    return f"{row['backend']} ({suffix})" if suffix else str(row["backend"])


def model_label(model: str, options: Any = None) -> str:
    """``unet`` or, where one model ran with several option sets, ``unet (base_channels=8)``."""
    suffix = options_text(options)
    return f"{model} ({suffix})" if suffix else model


def size(row: Mapping[str, Any]) -> str:
    return f"{int(row['height'])}x{int(row['width'])}"


def cell_label(row: Mapping[str, Any], model: str | None = None) -> str:
    """``unet onnxruntime cpu fp32 256x256 b4``: one cell, named alike in every table and figure."""
    name = model or str(row.get("model_label") or row["model"])
    return f"{name} {backend_label(row)} {row['device']} {row['precision']} {size(row)} b{row['batch_size']}"


def check_label(row: Mapping[str, Any]) -> str:
    """``unet onnxruntime cpu fp16 miou``: one numerics check."""
    return f"{row['model']} {backend_label(row)} {row['device']} {row['precision']} {row['metric']}"


# -- rows ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckView:
    """One numerics row as every renderer shows it."""

    model: str
    backend: str
    device: str
    precision: str
    level: str
    metric: str
    value: str
    baseline: str
    delta: str
    interval: str
    band: str
    images: str
    verdict: str  # the word: pass, FAIL, inconclusive, baseline, info
    note: str  # the error, or what an inconclusive verdict lacks
    tone: str

    @property
    def verdict_text(self) -> str:
        return with_note(self.verdict, self.note)


def check_view(row: Mapping[str, Any]) -> CheckView:
    """A numerics row (a ``numerics.jsonl`` dict or a ``checks`` frame row, new or old) formatted."""
    level = str(row.get("level") or "task")
    word = verdict_word(row)
    return CheckView(
        model=str(row["model"]),
        backend=backend_label(row),
        device=str(row["device"]),
        precision=str(row["precision"]),
        level=level,
        metric=str(row["metric"]),
        value=check_value(row.get("value"), level),
        baseline=points(row.get("baseline")),
        delta=delta(row.get("delta")),
        interval=interval(*interval_of(row)),
        band=limit_text(row),
        images=images(row),
        verdict=word,
        note=verdict_note(row),
        tone=tone(word),
    )


def _latency_of(row: Mapping[str, Any], stat: str) -> Any:
    # A cells frame row has it flat (``p50_ms``), a results.jsonl row under ``latency_ms``.
    if f"{stat}_ms" in row:
        return row[f"{stat}_ms"]
    return (row.get("latency_ms") or {}).get(stat)


@dataclass(frozen=True)
class CellView:
    """One timing cell as every renderer shows it."""

    model: str
    backend: str
    device: str
    precision: str
    size: str
    batch: str
    p50: str
    p90: str
    p99: str
    mean: str
    throughput: str
    peak_host: str
    peak_device: str
    achieved: str  # TFLOP/s
    peak_fraction: str  # of the run's measured peak for the cell's device and precision
    status: str  # ok, failed, timeout, crashed
    error: str
    tone: str

    @property
    def status_text(self) -> str:
        """``ok``, or ``failed: RuntimeError: out of memory``."""
        if self.status == "ok":
            return self.status
        return f"{self.status}: {self.error or 'no error recorded'}"


def cell_view(row: Mapping[str, Any]) -> CellView:
    """A timing cell (a ``results.jsonl`` dict or a ``cells`` frame row) formatted. A failed cell's
    numbers are missing (``-``), never zeros."""
    ok = row["status"] == "ok"
    error = row.get("error")
    return CellView(
        model=str(row["model"]),
        backend=backend_label(row),
        device=str(row["device"]),
        precision=str(row["precision"]),
        size=size(row),
        batch=str(row["batch_size"]),
        p50=latency(_latency_of(row, "p50")),
        p90=latency(_latency_of(row, "p90")),
        p99=latency(_latency_of(row, "p99")),
        mean=latency(_latency_of(row, "mean")),
        throughput=throughput(row.get("throughput_ips")),
        peak_host=memory(row.get("peak_host_mb")),
        peak_device=memory(row.get("peak_device_mb")),
        achieved=tflops(row.get("achieved_tflops")),
        peak_fraction=peak_share(row.get("peak_fraction")),
        status=str(row["status"]),
        error="" if missing(error) else str(error),
        tone=OK_TONE if ok else FAIL_TONE,
    )
