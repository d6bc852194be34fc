"""Self-contained HTML: inline CSS, inline SVG figures, no scripts, no external resources."""

from __future__ import annotations

import io
import re

import jinja2
import matplotlib
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from certrl.report.document import Document, Fig
from certrl.report.figures import FIG_WIDTH, RC, FigureSpec, StableLayout


def render_svg(spec: FigureSpec) -> str:
    """The figure as an ``<svg>`` element for inline use: deterministic ids (salted with the
    figure id, so ids never collide between figures), no XML prolog, metadata or namespaces
    pointing at remote URLs, scaling with its container (``viewBox``)."""
    with matplotlib.rc_context(RC):
        matplotlib.rcParams["svg.hashsalt"] = f"certrl-{spec.fig_id}"
        fig = Figure(figsize=(FIG_WIDTH, spec.height), layout=StableLayout())
        spec.draw(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                 "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    # ids are unique within one SVG only (figure_1, axes_1, ...): prefix them with the figure id
    ids = set(re.findall(r'\sid="([^"]+)"', svg))
    pre = spec.fig_id
    svg = re.sub(r'(\sid="|href="#|url\(#)([^")]+)',
                 lambda m: m.group(1) + (f"{pre}-{m.group(2)}" if m.group(2) in ids
                                         else m.group(2)), svg)
    svg = re.sub(r'<svg\s+width="[^"]*"\s+height="[^"]*"',
                 f'<svg id="{spec.fig_id}" class="figure" role="img" '
                 f'aria-label="{escape(spec.title)}"', svg, count=1)
    return svg.strip()


_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> Markup:
    """Escape, then render `backticks` as <code>."""
    return Markup(_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", str(escape(text))))


CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;--pass:#009E73;
--fail:#D55E00;--accent:#0072B2;color-scheme:light}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:980px;margin:0 auto;padding:16px}
header{border-bottom:2px solid var(--accent);margin-bottom:8px}
h1{font-size:1.6em;margin:.3em 0 .1em}
h2{font-size:1.3em;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{font-size:1.08em;margin:1.2em 0 .4em}
.subtitle{color:var(--muted);margin:0 0 .8em;overflow-wrap:anywhere}
nav{font-size:.92em;margin:.5em 0 1em}
nav a{margin-right:1em;color:var(--accent);text-decoration:none;white-space:nowrap}
.verdict{border:2px solid var(--line);border-radius:10px;padding:12px 14px;margin:.6em 0;
background:var(--soft);break-inside:avoid}
.verdict.pass{border-color:var(--pass)}.verdict.fail{border-color:var(--fail)}
.verdict h3{margin:0 0 .4em}
.verdict dl{display:grid;grid-template-columns:max-content 1fr;gap:.25em .9em;margin:0}
.verdict dt{font-weight:600;color:var(--muted)}
.verdict dd{margin:0;overflow-wrap:anywhere}
.status{display:inline-block;font-weight:700;padding:.15em .6em;border-radius:6px;color:#fff;
margin:.2em 0 .5em}
.status.pass{background:var(--pass)}.status.fail{background:var(--fail)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px}
.table-wrap{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em;min-width:60%}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft)}
td{font-variant-numeric:tabular-nums}
table.nums td{white-space:nowrap}
.tcaption{color:var(--muted);font-size:.85em;margin:-.3em 0 .8em}
table.nums td.wrap{white-space:normal;min-width:14em}
figure{margin:1em 0;break-inside:avoid;page-break-inside:avoid}
figure svg{width:100%;height:auto;display:block}
.fig-scroll{overflow-x:auto}
figcaption{color:var(--muted);font-size:.9em;margin-top:.3em}
figcaption b{color:var(--fg)}
.missing{border-left:4px solid var(--fail);background:#fff4ec;padding:.5em .8em}
.note{border-left:4px solid #E69F00;background:#fff9e6;padding:.5em .8em}
.statement{border-left:4px solid var(--accent);background:#eef6fc;padding:.5em .8em}
.small{color:var(--muted);font-size:.92em}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88em}
pre{background:var(--soft);border:1px solid var(--line);padding:8px;overflow-x:auto;
white-space:pre-wrap;overflow-wrap:anywhere}
footer{color:var(--muted);font-size:.85em;border-top:1px solid var(--line);margin-top:2em;
padding-top:.5em}
@media (max-width:600px){body{font-size:14px}main{padding:10px}
.verdict dl{grid-template-columns:1fr}.verdict dt{margin-top:.3em}
th,td{padding:3px 5px}.fig-scroll svg{min-width:560px}
nav a{display:inline-block;margin:.1em .8em .1em 0}}
@media print{@page{size:A4;margin:14mm}body{font-size:10.5pt}main{max-width:none;padding:0}
nav{display:none}a{color:inherit;text-decoration:none}
h2{break-after:avoid;page-break-after:avoid}h3{break-after:avoid}
.table-wrap,.fig-scroll{overflow:visible}.fig-scroll svg{min-width:0}
table.nums td{white-space:normal}table{font-size:8.5pt}
.verdict,.missing,.note,.statement,pre{-webkit-print-color-adjust:exact;print-color-adjust:exact}
figure{break-inside:avoid}}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<meta name="generator" content="certrl {{ version }}">
<title>{{ doc.title }}: {{ doc.subtitle }}</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<header>
<h1>{{ doc.title }}</h1>
<p class="subtitle">{{ doc.subtitle }}</p>
</header>
<nav aria-label="contents">{% for h in doc.toc() %}<a href="#{{ h.anchor }}">{{ h.text }}</a>
{% endfor %}</nav>
{% for b in doc.blocks %}
{%- set k = b.__class__.__name__ -%}
{%- if k == "Heading" %}
<h{{ b.level }} id="{{ b.anchor }}">{{ b.text }}</h{{ b.level }}>
{%- elif k == "Para" %}
<p class="{{ b.kind }}">{{ inline(b.text) }}</p>
{%- elif k == "Table" %}
<div class="table-wrap"><table{% if not b.wrap %} class="nums"{% endif %}>
<thead><tr>{% for h in b.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for r in b.rows %}
<tr>{% for c in r %}<td{% if loop.index0 in b.wrap_cols %} class="wrap"{% endif %}>
{{- inline(c) }}</td>{% endfor %}</tr>
{%- endfor %}
</tbody></table></div>
{%- if b.caption %}
<p class="tcaption">{{ inline(b.caption) }}</p>
{%- endif %}
{%- elif k == "Verdict" %}
{{ verdict(b) }}
{%- elif k == "Cards" %}
<div class="cards">{% for v in b.verdicts %}{{ verdict(v) }}{% endfor %}</div>
{%- elif k == "Code" %}
<pre>{% for line in b.lines %}{{ line }}
{% endfor %}</pre>
{%- elif k == "Fig" %}
<figure>
<div class="fig-scroll">{{ svgs[b.spec.fig_id] }}</div>
<figcaption><b>{{ b.spec.title }}.</b> {{ inline(b.spec.caption) }}</figcaption>
</figure>
{%- endif %}
{%- endfor %}
<footer>Generated by certrl {{ version }} from results files updated {{ doc.date }}.
Same inputs, same bytes: this report carries no timestamp of its own.</footer>
</main>
</body>
</html>
"""

VERDICT = """<section class="verdict{% if v.status %} {{ v.status }}{% endif %}">
<h3>{{ v.title }}</h3>
{%- if v.status %}
<div class="status {{ v.status }}">{{ v.status_text }}</div>
{%- endif %}
<dl>
{%- for k, val in v.rows %}
<dt>{{ k }}</dt><dd>{{ inline(val) }}</dd>
{%- endfor %}
</dl>
</section>"""


def render_html(doc: Document, svgs: dict[str, str] | None = None) -> str:
    from certrl._version import __version__

    if svgs is None:
        svgs = {b.spec.fig_id: render_svg(b.spec) for b in doc.blocks if isinstance(b, Fig)}
    env = jinja2.Environment(autoescape=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    vt = env.from_string(VERDICT)

    def verdict(v: object) -> Markup:
        return Markup(vt.render(v=v, inline=_inline))

    tmpl = env.from_string(TEMPLATE)
    return tmpl.render(
        doc=doc, css=Markup(CSS.strip()), version=__version__, inline=_inline, verdict=verdict,
        svgs={k: Markup(v) for k, v in svgs.items()},
    )
