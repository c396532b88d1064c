"""``index.html`` of a batch of reports: one row per pair, sortable by any column
(a few lines of inline JavaScript, no network), a link to each report and the
error of each pair that failed. Every value is escaped."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from quantlab.reports.render import STYLE, e, fmt

__all__ = ["write_index", "index_html", "INDEX_COLUMNS"]

#: (key in the row, column heading), in display order.
INDEX_COLUMNS = (("pair", "pair"), ("verdict", "verdict"), ("coint_pvalue", "EG p (y on x)"),
                 ("coint_pvalue_x_on_y", "EG p (x on y)"), ("half_life_bars", "half-life, bars"),
                 ("hedge_ratio", "hedge ratio"), ("sharpe", "net Sharpe"),
                 ("sharpe_lagged", "Sharpe +1 bar"), ("dsr", "deflated Sharpe"),
                 ("n_trials", "trials in family"), ("break_even_fee_bps", "break-even fee bps"),
                 ("n_trades", "trades"), ("n_bars", "bars"), ("error", "error"))

_SORT_JS = """<script>
function qlSort(th) {  // numbers numerically, text alphabetically, empty cells always last
  const table = th.closest('table'), idx = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const rows = Array.from(table.tBodies[0].rows);
  const key = r => { const c = r.cells[idx]; const v = c.dataset.v;
    if (v !== undefined && v !== '') return parseFloat(v);
    const t = c.textContent.trim().toLowerCase(); return t === '' ? null : t; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const d = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return asc ? d : -d; });
  rows.forEach(r => table.tBodies[0].appendChild(r));
}
</script>"""


def _cell(key: str, row: Mapping[str, Any]) -> str:
    value = row.get(key)
    if key == "pair":
        link = row.get("html")
        text = e(value)
        if link:
            return f"<td><a href='{e(link)}'>{text}</a></td>"
        return f"<td>{text}</td>"
    if key == "error":
        nb = row.get("notebook")
        extra = f" (executed notebook: {e(nb)})" if nb else ""
        return f"<td class='ql-fail'>{e(value) + extra if value else ''}</td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td class='num' data-v='{e(value)}'>{e(fmt(value))}</td>"
    return f"<td>{e('' if value is None else value)}</td>"


def index_html(rows: Iterable[Mapping[str, Any]], *, title: str = "Pair reports") -> str:
    rows = list(rows)
    n_failed = sum(1 for r in rows if not r.get("ok", True))
    head = "".join(f"<th onclick='qlSort(this)' style='cursor:pointer'>{e(h)}</th>"
                   for _, h in INDEX_COLUMNS)
    body = "".join("<tr>" + "".join(_cell(k, r) for k, _ in INDEX_COLUMNS) + "</tr>" for r in rows)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(title)}</title>{STYLE}</head><body class='ql-report'>"
            f"<h1>{e(title)}</h1><p class='ql-note'>{len(rows)} pairs, {n_failed} failed. "
            "Click a column heading to sort.</p>"
            f"<table id='ql-index'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"{_SORT_JS}</body></html>")


def write_index(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], *,
                title: str = "Pair reports") -> Path:
    """Write the index page atomically; returns its path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(index_html(rows, title=title), encoding="utf-8")
    os.replace(tmp, path)
    return path
