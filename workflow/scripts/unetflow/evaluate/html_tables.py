"""HTML tables for the Snakemake report: standalone pages, no external resources."""

from pathlib import Path

import pandas as pd


def write_html_tables(tables: list[tuple[str, pd.DataFrame]], path) -> Path:
    """A standalone HTML page (inline style, no external resources) with a heading and a table per entry."""
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse;margin-bottom:2em}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}")
    body = "".join(f"<h2>{title}</h2>{table.to_html(index=False, float_format=lambda v: f'{v:.4f}', border=0)}"
                   for title, table in tables)
    Path(path).write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head>"
                          f"<body>{body}</body></html>", encoding="utf-8")
    return Path(path)
