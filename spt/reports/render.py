"""Writing a small table as markdown, booktabs LaTeX or CSV, without template engines.

Tables have one row label column (the index) and columns with one or two header levels;
with two levels the upper one groups columns (``IoU`` over its datasets). Cells are
formatted by ``format_cell``: floats with a fixed number of decimals, integers as they are,
missing values as an en dash (``--`` in LaTeX). ``bold`` is a same-shaped boolean frame marking cells to set
in bold (the best value of a column).
"""

from __future__ import annotations

import math
from itertools import groupby

import pandas as pd

MISSING = "–"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def format_cell(value, digits: int = 3) -> str:
    if value is None or value is pd.NA:
        return MISSING
    if isinstance(value, float) or (hasattr(value, "dtype") and value.dtype.kind == "f"):
        return MISSING if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _header_levels(df: pd.DataFrame) -> list[tuple[str, ...]]:
    return [c if isinstance(c, tuple) else (c,) for c in df.columns]


def _cells(df: pd.DataFrame, digits: int, bold: pd.DataFrame | None, wrap) -> list[list[str]]:
    rows = []
    for i in range(len(df)):
        row = []
        for j in range(df.shape[1]):
            text = format_cell(df.iat[i, j], digits)
            row.append(wrap(text) if bold is not None and bool(bold.iat[i, j]) else text)
        rows.append(row)
    return rows


def markdown(df: pd.DataFrame, digits: int = 3, bold: pd.DataFrame | None = None) -> str:
    """GitHub markdown; two header levels are joined as ``upper: lower``."""
    headers = [": ".join(str(p) for p in parts if str(p)) for parts in _header_levels(df)]
    index_title = df.index.name or ""
    lines = [
        "| " + " | ".join([index_title, *headers]) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(headers)) + "|",
    ]
    for label, row in zip(df.index, _cells(df, digits, bold, lambda t: f"**{t}**"), strict=True):
        lines.append("| " + " | ".join([str(label), *row]) + " |")
    return "\n".join(lines) + "\n"


def latex(
    df: pd.DataFrame,
    digits: int = 3,
    bold: pd.DataFrame | None = None,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """A booktabs ``tabular`` (wrapped in ``table`` when a caption or label is given).

    With two header levels the upper level becomes ``\\multicolumn`` groups underlined by
    ``\\cmidrule``. Needs ``\\usepackage{booktabs}`` in the document.
    """
    levels = _header_levels(df)
    n_cols = len(levels)
    lines = [r"\begin{tabular}{l" + "r" * n_cols + "}", r"\toprule"]
    if levels and len(levels[0]) > 1:
        groups, rules, col = [], [], 2  # column 1 holds the row labels
        for upper, members in groupby(parts[0] for parts in levels):
            width = len(list(members))
            groups.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(upper)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
            col += width
        lines.append(" & ".join(["", *groups]) + r" \\")
        lines.append(" ".join(rules))
    lower = [latex_escape(parts[-1]) for parts in levels]
    lines.append(" & ".join([latex_escape(df.index.name or ""), *lower]) + r" \\")
    lines.append(r"\midrule")
    cells = _cells(df, digits, None, str)
    for i, (row_label, row) in enumerate(zip(df.index, cells, strict=True)):
        # an ASCII dash pair typesets as an en dash whatever the input encoding
        texts = ["--" if t == MISSING else latex_escape(t) for t in row]
        texts = [
            rf"\textbf{{{t}}}" if bold is not None and bool(bold.iat[i, j]) else t
            for j, t in enumerate(texts)
        ]
        lines.append(" & ".join([latex_escape(row_label), *texts]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    body = "\n".join(lines)
    if caption is None and label is None:
        return body + "\n"
    wrapped = [r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        wrapped.append(rf"\caption{{{latex_escape(caption)}}}")
    if label is not None:
        wrapped.append(rf"\label{{{label}}}")
    return "\n".join([*wrapped, body, r"\end{table}"]) + "\n"


def csv(df: pd.DataFrame) -> str:
    """Full-precision CSV; two header levels give two header lines (read back with
    ``pd.read_csv(..., header=[0, 1], index_col=0)``)."""
    return df.to_csv(lineterminator="\n")
