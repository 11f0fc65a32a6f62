"""Drift reports: JSON, a self-contained HTML page (per-feature histograms), and a text table."""

from __future__ import annotations

import html
import json
from typing import Any

from airflow_mlops.core.drift.engine import DriftReport

_W, _H = 360, 120


def report_json(report: DriftReport, context: dict[str, Any] | None = None) -> str:
    """The full report as JSON (histograms included), with optional context (model, window)."""
    return json.dumps({"context": context or {}, **report.to_dict()}, indent=1, default=str)


def summary_table(summary: dict[str, Any]) -> str:
    """A readable fixed-width table of a report summary (for task logs)."""
    rows = [("column", "test", "score", "threshold", "drifted")]
    for name, c in summary["columns"].items():
        score = "n/a" if c["score"] is None else f"{c['score']:.4g}"
        if "p_adjusted" in c and c["p_adjusted"] is not None:
            score += f" (adj {c['p_adjusted']:.4g})"
        rows.append((name, c["test"], score, f"{c['threshold']:g}", "YES" if c["drifted"] else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"drifted columns: {summary['n_drifted']}/{summary['n_columns']} "
        f"(share {summary['share_drifted']:.3f}, rule >= {summary['drift_share']}) -> "
        f"{'DATASET DRIFT' if summary['drift_detected'] else 'no dataset drift'}"
    )
    return "\n".join(lines)


def _bars(ref: list[float], cur: list[float], labels: list[str] | None = None) -> str:
    n = max(len(ref), 1)
    top = max([*ref, *cur, 1e-12])
    bw = _W / n
    parts = [f'<svg width="{_W}" height="{_H + 16}" role="img">']
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = i * bw
        for j, (v, color) in enumerate(((r, "#4c72b0"), (c, "#dd8452"))):
            h = _H * v / top
            parts.append(
                f'<rect x="{x + j * bw / 2:.1f}" y="{_H - h:.1f}" width="{max(bw / 2 - 0.5, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{"reference" if j == 0 else "current"}: '
                f"{v:.4f}</title></rect>"
            )
    if labels:
        parts.append(f'<text x="0" y="{_H + 12}" font-size="10">{html.escape(labels[0])}</text>')
        parts.append(
            f'<text x="{_W}" y="{_H + 12}" font-size="10" text-anchor="end">{html.escape(labels[-1])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def report_html(report: DriftReport, title: str = "Data drift report") -> str:
    """A self-contained HTML page: the verdict, a table of tests, and reference (blue) vs current
    (orange) histograms per feature."""
    s = report.summary()
    rows = []
    for c in report.columns:
        score = "n/a" if c.score is None else f"{c.score:.4g}"
        chart = ""
        if c.hist and "edges" in c.hist:
            e = c.hist["edges"]
            chart = _bars(c.hist["reference"], c.hist["current"], [f"{e[0]:.4g}", f"{e[-1]:.4g}"])
            out = c.hist.get("current_below", 0) + c.hist.get("current_above", 0)
            if out > 0:
                chart += f"<div>current outside the reference range: {out:.1%}</div>"
        elif c.hist:
            chart = _bars(
                c.hist["reference"], c.hist["current"], [c.hist["categories"][0], c.hist["categories"][-1]]
            )
        rows.append(
            f"<tr class='{'drift' if c.drifted else ''}'><td>{html.escape(c.column)}</td><td>{c.kind}</td>"
            f"<td>{c.test}</td><td>{score}</td><td>{c.threshold:g}</td>"
            f"<td>{'YES' if c.drifted else 'no'}</td><td>{html.escape(c.note)}</td><td>{chart}</td></tr>"
        )
    verdict = "Dataset drift detected" if s["drift_detected"] else "No dataset drift"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}tr.drift td{{background:#fde8e8}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p><b>{verdict}</b>: {s["n_drifted"]} of {s["n_columns"]} columns drifted (share {s["share_drifted"]:.3f},
rule &ge; {s["drift_share"]}); reference rows {s["n_reference"]}, current rows {s["n_current"]}.
Blue: reference, orange: current.</p>
<p>Schema: missing {html.escape(str(s["schema"]["missing"]))}, extra {html.escape(str(s["schema"]["extra"]))},
retyped {html.escape(str(s["schema"]["retyped"]))}</p><ul>{notes}</ul>
<table><tr><th>column</th><th>kind</th><th>test</th><th>score</th><th>threshold</th><th>drifted</th>
<th>note</th><th>distribution</th></tr>{"".join(rows)}</table></body></html>"""
