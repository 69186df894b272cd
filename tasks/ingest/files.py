"""CSV and JSON-lines metric files: ``timestamp, component, metric, value[, labels]``.

Timestamps may be ISO-8601 text or epoch numbers (seconds, or milliseconds when larger
than 1e11). Labels may be a JSON object or ``key=value;key=value``. Bad rows are counted
with their reason and line number; the good rows of the same file are kept.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from storage.metrics import labels_key
from tasks.ingest.records import SAMPLE_COLUMNS, IngestReport, empty_samples

REQUIRED = ("timestamp", "component", "metric", "value")
TS_ALIASES = ("timestamp", "ts", "time")


class MetricFileError(Exception):
    """The file as a whole cannot be read (missing, unreadable, no header)."""


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def read_metric_file(
    path: str | Path, fmt: str, report: IngestReport, chunk_rows: int = 100_000
) -> Iterator[pd.DataFrame]:
    """Yield batches of valid-looking samples (values and timestamps are checked later)."""
    p = Path(path)
    if not p.is_file():
        raise MetricFileError(f"metric file not found: {p}")
    kind = detect_format(p, fmt)
    rows = _csv_rows(p, report) if kind == "csv" else _jsonl_rows(p, report)
    chunk: list[tuple[int, str, str, str, str, str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield _to_frame(chunk, report)
            chunk = []
    if chunk:
        yield _to_frame(chunk, report)


def _parse_labels(raw: object) -> str | None:
    if raw is None or raw == "":
        return "{}"
    if isinstance(raw, dict):
        return labels_key(raw)
    text = str(raw).strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None
        return labels_key(obj) if isinstance(obj, dict) else None
    labels: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            return None
        k, v = part.split("=", 1)
        labels[k.strip()] = v.strip()
    return labels_key(labels)


def _csv_rows(p: Path, report: IngestReport) -> Iterator[tuple[int, str, str, str, str, str]]:
    with p.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            return
        ts_col = next((h for h in TS_ALIASES if h in header), None)
        missing = [c for c in REQUIRED[1:] if c not in header]
        if ts_col is None or missing:
            need = ([] if ts_col else ["timestamp"]) + missing
            raise MetricFileError(f"{p}: header lacks column(s) {', '.join(need)}")
        idx = {name: header.index(name) for name in ("component", "metric", "value")}
        its = header.index(ts_col)
        ilab = header.index("labels") if "labels" in header else None
        width = len(header)
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                report.reject("wrong number of fields", 1, f"{p.name}:{lineno}: {row!r:.80}")
                continue
            raw_labels = row[ilab] if ilab is not None else ""
            labels = _parse_labels(raw_labels)
            if labels is None:
                report.reject("malformed labels", 1, f"{p.name}:{lineno}: {raw_labels!r:.80}")
                continue
            yield (
                lineno,
                row[its].strip(),
                row[idx["component"]].strip(),
                row[idx["metric"]].strip(),
                row[idx["value"]].strip(),
                labels,
            )


def _jsonl_rows(p: Path, report: IngestReport) -> Iterator[tuple[int, str, str, str, str, str]]:
    with p.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                report.reject("invalid JSON", 1, f"{p.name}:{lineno}: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                report.reject("not a JSON object", 1, f"{p.name}:{lineno}")
                continue
            ts = next((obj[k] for k in TS_ALIASES if k in obj), None)
            missing = [k for k in ("component", "metric", "value") if k not in obj]
            if ts is None or missing:
                need = ([] if ts is not None else ["timestamp"]) + missing
                report.reject("missing field", 1, f"{p.name}:{lineno}: no {', '.join(need)}")
                continue
            labels = _parse_labels(obj.get("labels"))
            if labels is None:
                report.reject("malformed labels", 1, f"{p.name}:{lineno}")
                continue
            yield (
                lineno,
                str(ts),
                str(obj["component"]),
                str(obj["metric"]),
                str(obj["value"]),
                labels,
            )


def parse_timestamps_ms(raw: pd.Series) -> pd.Series:
    """Epoch ms from ISO text or epoch numbers; unparseable entries become <NA>."""
    numeric = pd.to_numeric(raw, errors="coerce")
    out = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    is_num = numeric.notna() & np.isfinite(numeric.fillna(0))
    nums = numeric[is_num]
    out[is_num] = np.where(nums.abs() > 1e11, nums, nums * 1000).round().astype("int64")
    text = raw[~is_num]
    if len(text):
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        ok = parsed.notna()
        out[ok[ok].index] = parsed[ok].dt.as_unit("ms").astype("int64")
    return out


def _to_frame(
    chunk: list[tuple[int, str, str, str, str, str]], report: IngestReport
) -> pd.DataFrame:
    df = pd.DataFrame.from_records(
        chunk, columns=["line", "ts_raw", "component", "metric", "value_raw", "labels"]
    )
    ts = parse_timestamps_ms(df["ts_raw"])
    value = pd.to_numeric(df["value_raw"], errors="coerce")
    # Text such as "NaN" or "inf" parses to a float; keep it so validation names the reason.
    bad_value = value.isna() & ~df["value_raw"].str.lower().isin(["nan", "+nan", "-nan"])
    checks = [
        ("unparseable timestamp", ts.isna()),
        ("value is not a number", bad_value),
        ("empty component", df["component"] == ""),
    ]
    bad = pd.Series(False, index=df.index)
    for reason, mask in checks:
        mask = mask & ~bad
        n = int(mask.sum())
        if n:
            first = df[mask].iloc[0]
            report.reject(
                reason,
                n,
                f"line {first['line']}: {reason}: {first['ts_raw']!r}, {first['value_raw']!r}",
            )
            bad |= mask
    good = df[~bad]
    if good.empty:
        return empty_samples()
    out = pd.DataFrame(
        {
            "component": good["component"].to_numpy(dtype=object),
            "metric": good["metric"].to_numpy(dtype=object),
            "labels": good["labels"].to_numpy(dtype=object),
            "ts": ts[~bad].to_numpy(dtype="int64"),
            "value": value[~bad].to_numpy(dtype=float),
            "kind": "gauge",
        }
    )
    return out[SAMPLE_COLUMNS]
