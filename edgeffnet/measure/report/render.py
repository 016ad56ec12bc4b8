"""The tables as Markdown, HTML and a terminal table; what a record says is text, never markup."""

from __future__ import annotations

import html
import re

from edgeffnet.measure.console import ms
from edgeffnet.measure.report.tables import cell

_MARKDOWN_ACTIVE = re.compile(r"([\\`|<>\[\]])")


def markdown_text(text: str) -> str:
    """Text from a record (a spec, family, node or tool name) as inert Markdown: one line, and no character
    that ends a table cell, opens code, a link, an image or an HTML tag."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(str(text).split()))


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(markdown_text(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def html_table(header: list[str], body: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows_ = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{rows_}</tbody></table>"


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.5em}
table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}
table.text td,table.text th{text-align:left}
.note{color:#666}.warning{color:#8a3b00;background:#fff4e5;padding:4px 8px}"""


def console_table(report: dict):
    """The results for a terminal, in 80 columns: the ones that matter most (report.md has them all)."""
    from rich import box
    from rich.table import Table

    t = Table(
        title=f"Results ({report['generated']})",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    for h in ("model", "runtime", "mode", "GMACs", "p50 ms", "p90 ms", "img/s", "GFLOP/s", "peak"):
        # No column is cut or wrapped: "latency"/"throughput" whole; a narrow terminal scrolls, as a pipe does.
        t.add_column(
            h,
            justify="left" if h in ("model", "runtime", "mode") else "right",
            no_wrap=True,
            min_width=len("throughput") if h == "mode" else None,
        )
    for r in report["rows"]:
        t.add_row(
            r["model"]
            + (" (random)" if r["weights"] == "random" else "")
            + (" (interrupted)" if r["interrupted"] else "")
            + (" (busy)" if r["busy"] else ""),
            f"{r['runtime']} {r['precision']}",
            r["mode"],
            f"{r['macs'] / 1e9:.3f}",
            ms(r["p50"]),
            ms(r["p90"]),
            cell(r["throughput_ips"], ".1f"),
            cell(r["gflops"], ".1f"),
            cell(r["fraction_of_peak"], ".0%"),
        )
    return t
