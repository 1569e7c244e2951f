"""A policy's version: a hash of everything it was fitted from, fast on millions of answers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_FLOAT_FORMAT = "%.10g"
_CSV_QUOTED = r'[,"\r\n]'  # characters that make the csv module quote a field
_CSV_BATCH = 500_000


def _csv_digest(digest: Any, frame: pd.DataFrame, by: list[str]) -> None:
    """Feed ``digest`` the bytes of ``frame.sort_values(by, kind="mergesort").to_csv(index=False,
    float_format="%.10g")``: the same bytes, so versions stay what they were.

    pandas formats every value of a frame in Python, which took about 40 s for 3.6M answers
    (bench/warehouse_scale.py). Here each column is factorized (sorted distinct values and a code
    per row, as sort_values does it), the rows are ordered by a stable lexsort of the codes (as
    sort_values does it), each distinct value is formatted once, and Arrow joins the lines.
    Frames whose CSV would need quoting, NaN, -0.0 or an unusual dtype take pandas' own path.
    """
    columns = _csv_columns(frame)
    if columns is None:
        ordered = frame.sort_values(by, kind="mergesort")
        digest.update(ordered.to_csv(index=False, float_format=_FLOAT_FORMAT).encode())
        return
    digest.update((",".join(str(name) for name in frame.columns) + os.linesep).encode())
    codes_of = dict(zip(frame.columns, (codes for _, codes in columns)))
    order = np.lexsort([codes_of[name] for name in reversed(by)]) if len(frame) else np.arange(0)
    for start in range(0, len(order), _CSV_BATCH):
        rows = order[start : start + _CSV_BATCH]
        fields = [pc.take(text, pa.array(codes[rows])) for text, codes in columns]
        lines = pc.binary_join_element_wise(*fields, ",")
        lines = pc.binary_join_element_wise(lines, "", os.linesep)  # every line ends with the terminator
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
        digest.update(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _csv_columns(frame: pd.DataFrame) -> list[tuple[pa.Array, np.ndarray]] | None:
    """Per column: the text the csv module writes for each distinct value, in sorted order, and
    each row's code into it; None when this path cannot promise pandas' bytes."""
    if frame.columns.has_duplicates or any(ch in str(name) for name in frame.columns for ch in ',"\r\n'):
        return None
    out: list[tuple[pa.Array, np.ndarray]] = []
    try:
        for name in frame.columns:
            series = frame[name]
            dtype = series.dtype
            if isinstance(dtype, np.dtype) and dtype.kind == "f":
                values = series.to_numpy()
                if np.isnan(values).any() or (np.signbit(values) & (values == 0)).any():
                    return None
            elif not (isinstance(dtype, np.dtype) and dtype.kind in "biu") and not isinstance(dtype, pd.StringDtype):
                return None
            codes, distinct = pd.factorize(series, sort=True)
            if len(codes) and codes.min() < 0:  # a missing value
                return None
            if isinstance(dtype, pd.StringDtype):
                text = pa.array(np.asarray(distinct, dtype=object), pa.string())
                if pc.any(pc.match_substring_regex(text, _CSV_QUOTED)).as_py():
                    return None
            elif dtype.kind == "f":
                text = pa.array([_FLOAT_FORMAT % v for v in np.asarray(distinct)], pa.string())
            else:
                text = pa.array([str(v) for v in np.asarray(distinct)], pa.string())
            out.append((text, np.asarray(codes, dtype=np.int64)))
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return out
