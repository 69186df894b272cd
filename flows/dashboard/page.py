"""The HTML page: lays out the view models; every stored text is escaped here.

One self-contained document (inline CSS, inline SVG, a few lines of inline JavaScript),
so it works on a machine with no network and can be saved as a file. The script polls
``api/summary``: it updates the headline figures in place and reloads the page when the
tables changed, or every minute so the charts follow the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from flows.dashboard.svg import bar_chart, line_chart
from flows.dashboard.views import (
    ApprovalRow,
    ComponentPanel,
    Dashboard,
    IssueRow,
    RecoveryRow,
    Summary,
)

WINDOWS = (15, 30, 60, 180)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
header{background:#0f172a;color:#f8fafc;padding:12px 20px;display:flex;gap:24px;
align-items:baseline;flex-wrap:wrap}
header h1{font-size:20px;margin:0}header a{color:#93c5fd;margin-right:6px}
main{padding:12px 20px}section{margin-bottom:24px}h2{font-size:17px;margin:8px 0}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.tile{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:8px 14px;min-width:130px}
.tile b{display:block;font-size:22px}.tile span{display:block;color:#64748b;font-size:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:8px 12px;
margin-bottom:12px}
.card h3{margin:0 0 6px;font-size:15px}.charts{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{background:#fff}svg .plot{fill:#f8fafc;stroke:#e2e8f0}
svg .line{fill:none;stroke-width:1.5}svg .axis,svg .note,svg .legend{font-size:10px;fill:#64748b}
svg .legend{font-weight:600}svg .chart-title{font-size:11px;font-weight:600;fill:#0f172a}
svg .empty{font-size:12px;fill:#94a3b8}svg .anomaly{stroke-width:2}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9;font-size:12px}.empty-state{color:#64748b;font-style:italic}
.sev{border-radius:4px;padding:0 6px;color:#fff;font-size:12px}
.sev-critical{background:#7f1d1d}.sev-high{background:#dc2626}.sev-medium{background:#ea580c}
.sev-low{background:#ca8a04}.muted{color:#64748b}code{background:#f1f5f9;padding:1px 4px}
.approval{background:#fff7ed;border:1px solid #fdba74;border-radius:6px;padding:8px 12px;
margin-bottom:8px}
"""

SCRIPT = """
(function () {
  var body = document.body, every = Number(body.dataset.refresh || 0);
  if (!every) { return; }
  var reloadAt = Date.now() + Math.max(60, 4 * every) * 1000;
  function tick() {
    fetch('api/summary' + location.search, {cache: 'no-store'})
      .then(function (r) { return r.json(); })
      .then(function (s) {
        document.querySelectorAll('[data-field]').forEach(function (el) {
          if (el.dataset.field in s.tiles) { el.textContent = s.tiles[el.dataset.field]; }
        });
        body.dataset.updated = s.generated_at;
        document.getElementById('updated').textContent = 'updated ' + s.generated_at.slice(11, 19);
        if (s.fingerprint !== body.dataset.fingerprint || Date.now() > reloadAt) {
          location.reload();
        } else { setTimeout(tick, every * 1000); }
      })
      .catch(function () {
        document.getElementById('updated').textContent = 'dashboard unreachable, retrying';
        setTimeout(tick, every * 1000);
      });
  }
  tick();
})();
"""


def tiles(s: Summary) -> dict[str, str]:
    """Headline texts keyed like the page's ``data-field`` attributes (also sent as JSON)."""
    rate = "n/a" if s.auto_healing_rate is None else f"{s.auto_healing_rate:.1f} %"
    mttr = "n/a" if s.mean_time_to_recover_s is None else f"{s.mean_time_to_recover_s:.0f} s"
    return {
        "open_issues": str(s.open_issues),
        "active_recoveries": str(s.active_recoveries),
        "pending_approvals": str(s.pending_approvals),
        "auto_healing_rate": rate,
        "auto_healing_detail": f"{s.healed_automatically} of {s.issues_acted_on} issues",
        "mean_time_to_recover": mttr,
    }


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _sev(severity: str) -> str:
    return f"<span class='sev sev-{_e(severity)}'>{_e(severity)}</span>"


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    body = "".join(rows)
    if not body:
        return f"<p class='empty-state'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tiles(d: Dashboard) -> str:
    t = tiles(d.summary)
    items = [
        ("open_issues", "open issues"),
        ("active_recoveries", "recoveries in flight"),
        ("pending_approvals", "pending approvals"),
        ("auto_healing_rate", "auto-healing rate"),
        ("mean_time_to_recover", "mean time to recover"),
    ]
    cells = "".join(
        f"<div class='tile'><b data-field='{k}'>{_e(t[k])}</b><span>{_e(label)}</span>"
        + (
            f"<span data-field='auto_healing_detail'>{_e(t['auto_healing_detail'])}</span>"
            if k == "auto_healing_rate"
            else ""
        )
        + "</div>"
        for k, label in items
    )
    return f"<div class='tiles'>{cells}</div>"


def _approval(a: ApprovalRow) -> str:
    link = (
        f"<a class='ui-link' href='{_e(a.ui_url)}' target='_blank' rel='noopener'>"
        "answer in the Prefect UI</a>"
        if a.ui_url
        else "<span class='muted'>no Prefect run linked yet</span>"
    )
    return (
        f"<div class='approval' data-approval='{_e(a.id)}'>{_sev(a.severity)} "
        f"<b>{_e(a.component)}</b>: {_e(a.proposed_action)} "
        f"<span class='muted'>({_e(a.id)}, asked {_e(a.requested)}, expires {_e(a.expires)})"
        f"</span><br>{link} or from a shell: <code>{_e(a.approve_command)}</code> / "
        f"<code>{_e(a.reject_command)}</code></div>"
    )


def _approvals(d: Dashboard) -> str:
    body = "".join(_approval(a) for a in d.approvals)
    return (
        "<section id='approvals'><h2>Pending approvals</h2>"
        + (body or "<p class='empty-state'>No pending approvals.</p>")
        + "</section>"
    )


def _panel(p: ComponentPanel) -> str:
    charts = "".join(line_chart(c) for c in p.charts) or (
        "<p class='empty-state'>No key metrics stored for this component yet.</p>"
    )
    notes = []
    if p.active_issues:
        notes.append(f"{p.active_issues} active issue(s)")
    if p.unplaced_anomalies:
        notes.append(f"{p.unplaced_anomalies} log/behaviour anomalies in the window (no chart)")
    note = f" <span class='muted'>{_e('; '.join(notes))}</span>" if notes else ""
    return (
        f"<div class='card' data-component='{_e(p.name)}'><h3>{_e(p.name)}{note}</h3>"
        f"<div class='charts'>{charts}</div></div>"
    )


def _metrics(d: Dashboard) -> str:
    if not d.panels:
        body = (
            "<p class='empty-state'>No data yet: no component has been ingested. Run "
            "<code>selfheal ingest</code> or <code>selfheal serve</code>.</p>"
        )
    else:
        body = "".join(_panel(p) for p in d.panels)
    if d.hidden_components:
        names = ", ".join(d.hidden_components[:20])
        more = "…" if len(d.hidden_components) > 20 else ""
        body += (
            f"<p class='muted' id='hidden-components'>{len(d.hidden_components)} more "
            f"component(s) not drawn: {_e(names)}{more} (add <code>?component=NAME</code>)</p>"
        )
    title = f"Live metrics: last {d.window_minutes} min to {d.window_end}"
    return f"<section id='metrics'><h2>{_e(title)}</h2>{body}</section>"


def _issue_row(i: IssueRow) -> str:
    inhibited = f"by #{i.inhibited_by}" if i.inhibited_by is not None else ""
    return (
        f"<tr data-issue='{i.id}' data-status='{_e(i.status)}'><td>#{i.id}</td>"
        f"<td>{_sev(i.severity)}</td><td>{_e(i.title)}</td><td>{_e(i.component)}</td>"
        f"<td title='{_e(i.since_iso)}'>{_e(i.since)}</td><td>{i.anomaly_count}</td>"
        f"<td>{_e(i.status)}</td><td>{_e(inhibited)}</td></tr>"
    )


def _issues(d: Dashboard) -> str:
    table = _table(
        ["id", "severity", "title", "component", "since", "anomalies", "status", "inhibited"],
        (_issue_row(i) for i in d.issues),
        "No open issues.",
    )
    more = f"<p class='muted'>and {d.issues_not_shown} more</p>" if d.issues_not_shown else ""
    return f"<section id='issues'><h2>Open issues</h2>{table}{more}</section>"


def _recovery_row(r: RecoveryRow) -> str:
    issue = f"#{r.issue_id}" if r.issue_id is not None else "–"
    return (
        f"<tr data-recovery='{r.id}' data-status='{_e(r.status)}'><td>#{r.id}</td>"
        f"<td>{issue}</td><td>{_e(r.component)}</td><td>{_e(r.strategy)}</td>"
        f"<td>{_e(r.mode)}</td><td>{_e(r.status)}</td><td>{_e(r.started)}</td>"
        f"<td>{_e(r.duration)}</td><td>{_e(r.error)}</td></tr>"
    )


def _recoveries(d: Dashboard) -> str:
    headers = ["id", "issue", "component", "strategy", "mode", "status", "started", "duration"]
    headers.append("error")
    flight = _table(headers, map(_recovery_row, d.in_flight), "No recoveries in flight.")
    recent = _table(headers, map(_recovery_row, d.recent), "No recoveries yet.")
    return (
        "<section id='recoveries'><h2>Recoveries in flight</h2>"
        f"<div id='in-flight'>{flight}</div><h2>Recent recoveries</h2>"
        f"<div id='recent'>{recent}</div></section>"
    )


def _history(d: Dashboard) -> str:
    charts = "".join(line_chart(c) for c in d.history)
    if d.outcomes is not None:
        charts += bar_chart(d.outcomes)
    return (
        "<section id='history'><h2>Healing history</h2>"
        f"<div class='charts'>{charts}</div></section>"
    )


def _window_links(d: Dashboard) -> str:
    links = " ".join(
        f"<a href='?minutes={m}'>{m} min</a>" if m != d.window_minutes else f"<b>{m} min</b>"
        for m in WINDOWS
    )
    return f"<span>{links}</span>"


def render(d: Dashboard, refresh_s: int) -> str:
    """The whole page; ``refresh_s`` = 0 turns the polling script off."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>selfheal dashboard</title><style>{CSS}</style></head>"
        f"<body data-refresh='{int(refresh_s)}' data-fingerprint='{_e(d.summary.fingerprint)}'>"
        "<header><h1>selfheal</h1>"
        f"<span>{_window_links(d)}</span>"
        f"<span id='updated'>generated {_e(d.summary.generated_at[11:19])} UTC</span></header>"
        f"<main>{_tiles(d)}{_approvals(d)}{_metrics(d)}{_issues(d)}{_recoveries(d)}"
        f"{_history(d)}</main><script>{SCRIPT}</script></body></html>"
    )
