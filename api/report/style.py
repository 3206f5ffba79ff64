"""The report's one stylesheet, inlined into its <style> (the file fetches nothing)."""

CSS = """
:root { color-scheme: light; --muted: #57606a; --line: #d0d7de; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.report { max-width: 1000px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { margin: 0; font-size: 24px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 14px; margin: 8px 0 4px; color: var(--muted); }
.job-id { margin: 2px 0 12px; color: var(--muted); }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 12px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: left; }
table.numbers td { text-align: right; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 2px solid var(--line); }
tr.best td { background: #ddf4ff; }
.caption, figcaption { color: var(--muted); font-size: 12px; }
figure.plot { margin: 8px 0; } figure.plot svg { max-width: 100%; height: auto; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.box { border: 1px solid; border-radius: 6px; padding: 4px 16px; margin: 16px 0; }
.box h2 { margin-top: 8px; }
.warning { background: #fff8c5; border-color: #d4a72c; }
.error { background: #ffebe9; border-color: #ff8182; }
.note { background: #ddf4ff; border-color: #54aeff; }
.ok { background: #dafbe1; border-color: #4ac26b; }
.status { padding: 1px 8px; border-radius: 10px; background: #eaeef2; font-weight: 600; }
.status.succeeded { background: #dafbe1; } .status.failed { background: #ffebe9; }
.status.running { background: #ddf4ff; } .status.cancelled { background: #fff8c5; }
.status.degraded { background: #ffebe9; }
.up { color: #1a7f37; } .down { color: #cf222e; } .muted, .same { color: var(--muted); }
td.failed { color: #9a6700; } td.passed strong { color: #1a7f37; }
.interval { color: var(--muted); font-size: 12px; white-space: nowrap; }
"""
