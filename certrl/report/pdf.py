"""The PDF report: A4 pages composed with matplotlib only (``PdfPages``).

Text, tables and verdicts are laid out by a small flow engine (greedy word wrap with measured
glyph widths, page breaks, headings kept with what follows); figures are drawn by the same
functions as the HTML's into a region of the page (a ``SubFigure``). The PDF carries no
creation date, so the same inputs give the same bytes.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure, SubFigure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.textpath import TextToPath

from certrl.report.document import Cards, Code, Document, Fig, Heading, Para, Table, Verdict
from certrl.report.figures import BLUE, GREEN, ORANGE, RC, VERMILLION, FigureSpec, StableLayout

PAGE_W, PAGE_H = 8.27, 11.69  # A4 portrait, inches
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 0.55, 0.5, 0.6
TEXT_W = PAGE_W - 2 * MARGIN_X
BODY_H = PAGE_H - MARGIN_TOP - MARGIN_BOTTOM
LINE = 1.32  # line height / font size
GREY, MUTED, RULE = "#f6f8fa", "#57606a", "#d0d7de"
KIND_COLOR = {"missing": VERMILLION, "note": ORANGE, "statement": BLUE}


# ---------------------------------------------------------------------------- text measuring
@functools.lru_cache(maxsize=1)
def _t2p() -> TextToPath:
    return TextToPath()


@functools.lru_cache(maxsize=20000)
def _width_pt(text: str, size: float, weight: str = "normal", mono: bool = False) -> float:
    with matplotlib.rc_context(RC):
        family = "monospace" if mono else "sans-serif"
        prop = FontProperties(family=family, size=size, weight=weight)
        w, _, _ = _t2p().get_text_width_height_descent(text, prop, ismath=False)
    return float(w)


def wrap(text: str, width_in: float, size: float, weight: str = "normal",
         mono: bool = False) -> list[str]:
    """Greedy word wrap to ``width_in`` inches at ``size`` points (long words are split)."""
    limit = width_in * 72.0
    lines: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split(" "):
            cand = word if not cur else f"{cur} {word}"
            if _width_pt(cand, size, weight, mono) <= limit:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            while _width_pt(word, size, weight, mono) > limit and len(word) > 1:
                k = len(word)
                while k > 1 and _width_pt(word[:k], size, weight, mono) > limit:
                    k = max(1, int(k * 0.85))
                lines.append(word[:k])
                word = word[k:]
            cur = word
        lines.append(cur)
    return lines


def _lh(size: float) -> float:
    return size * LINE / 72.0


# ---------------------------------------------------------------------------- flow items
@dataclass
class Item:
    height: float  # inches
    draw: Callable[[SubFigure, float], None]  # (subfigure spanning the page width, height)
    keep_with_next: bool = False
    figure: bool = False


def _text(sf: SubFigure, h: float, x_in: float, y_in: float, s: str, size: float, **kw: object
          ) -> None:
    """Text at (x, y) inches from the subfigure's left / top edge."""
    sf.text(x_in / PAGE_W, 1 - y_in / h, s, fontsize=size, va="top", ha="left",
            transform=sf.transSubfigure, **kw)


def _rect(sf: SubFigure, h: float, x: float, y: float, w: float, hh: float, **kw: object
          ) -> None:
    sf.add_artist(Rectangle((x / PAGE_W, 1 - (y + hh) / h), w / PAGE_W, hh / h,
                            transform=sf.transSubfigure, **kw))


def _strip(s: str) -> str:
    return s.replace("`", "")


def _lines_item(lines: list[str], size: float, x: float = MARGIN_X, pad: float = 0.04,
                keep: bool = False, bar: str | None = None, bg: str | None = None,
                color: str = "black", weight: str = "normal", mono: bool = False) -> Item:
    lh = _lh(size)
    height = len(lines) * lh + 2 * pad

    def draw(sf: SubFigure, h: float) -> None:
        if bg:
            _rect(sf, h, MARGIN_X, 0.0, TEXT_W, height, facecolor=bg, edgecolor="none")
        if bar:
            _rect(sf, h, MARGIN_X, 0.0, 0.05, height, facecolor=bar, edgecolor="none")
        for i, line in enumerate(lines):
            _text(sf, h, x, pad + i * lh, line, size, color=color, weight=weight,
                  family="monospace" if mono else "sans-serif")

    return Item(height, draw, keep)


def _heading(b: Heading) -> list[Item]:
    size = 14.0 if b.level == 2 else 11.0
    lines = wrap(b.text, TEXT_W, size, "bold")
    lh = _lh(size)
    top = 0.18 if b.level == 2 else 0.1
    height = top + len(lines) * lh + 0.08

    def draw(sf: SubFigure, h: float) -> None:
        for i, line in enumerate(lines):
            _text(sf, h, MARGIN_X, top + i * lh, line, size, weight="bold")
        if b.level == 2:
            y = 1 - (height - 0.04) / h
            sf.add_artist(Line2D(
                [MARGIN_X / PAGE_W, 1 - MARGIN_X / PAGE_W], [y, y], color=BLUE, lw=1.0,
                transform=sf.transSubfigure))

    return [Item(height, draw, keep_with_next=True)]


def _para(b: Para) -> list[Item]:
    size = {"small": 8.0}.get(b.kind, 9.0)
    indent = 0.14 if b.kind in KIND_COLOR else 0.0
    lines = wrap(_strip(b.text), TEXT_W - indent - 0.05, size)
    bg = {"missing": "#fff4ec", "note": "#fff9e6", "statement": "#eef6fc"}.get(b.kind)
    return [_lines_item(lines, size, x=MARGIN_X + indent, pad=0.06 if bg else 0.03,
                        bar=KIND_COLOR.get(b.kind), bg=bg,
                        keep=b.kind == "statement" or b.text.rstrip().endswith(":"),
                        color=MUTED if b.kind == "small" else "black")]


def _col_widths(headers: list[str], rows: list[list[str]], size: float) -> list[float]:
    pad = 0.12
    n = len(headers)
    nat = []
    for j in range(n):
        cells = [headers[j]] + [_strip(r[j]) for r in rows if j < len(r)]
        nat.append(max(_width_pt(c, size, "bold" if i == 0 else "normal")
                       for i, c in enumerate(cells)) / 72.0 + pad)
    if sum(nat) <= TEXT_W:
        return nat
    widths = [0.0] * n
    free = list(range(n))
    avail = TEXT_W
    while True:
        share = avail / max(1, len(free))
        fixed = [j for j in free if nat[j] <= share]
        if not fixed:
            break
        for j in fixed:
            widths[j] = nat[j]
            avail -= nat[j]
            free.remove(j)
    tot = sum(nat[j] for j in free) or 1.0
    for j in free:
        widths[j] = max(0.5, avail * nat[j] / tot)
    return widths


def _table(b: Table) -> list[Item]:
    size = 7.5 if len(b.headers) > 4 else 8.0
    widths = _col_widths(b.headers, b.rows, size)
    lh = _lh(size)
    pad = 0.04
    xs = [MARGIN_X]
    for w in widths[:-1]:
        xs.append(xs[-1] + w)

    def row_item(cells: list[str], header: bool) -> Item:
        wrapped = [wrap(_strip(c), w - 0.1, size, "bold" if header else "normal")
                   for c, w in zip(cells, widths, strict=True)]
        height = max(len(x) for x in wrapped) * lh + 2 * pad

        def draw(sf: SubFigure, h: float) -> None:
            if header:
                _rect(sf, h, MARGIN_X, 0, sum(widths), height, facecolor=GREY, edgecolor="none")
            for x, lines in zip(xs, wrapped, strict=True):
                for i, line in enumerate(lines):
                    _text(sf, h, x + 0.05, pad + i * lh, line, size,
                          weight="bold" if header else "normal")
            y = 1 - height / h
            sf.add_artist(Line2D(
                [MARGIN_X / PAGE_W, (MARGIN_X + sum(widths)) / PAGE_W], [y, y], color=RULE,
                lw=0.6, transform=sf.transSubfigure))

        return Item(height, draw, keep_with_next=header)

    items = [row_item(b.headers, True)] + [row_item(r, False) for r in b.rows]
    if b.caption:
        items.append(_lines_item(wrap(_strip(b.caption), TEXT_W, 7.5), 7.5, color=MUTED))
    return items


def _verdict(v: Verdict) -> list[Item]:
    size = 8.5
    lh = _lh(size)
    key_w = 1.35
    val_w = TEXT_W - key_w - 0.3
    title = wrap(v.title, TEXT_W - 0.3, 10.5, "bold")
    status = wrap(v.status_text, TEXT_W - 0.4, 9.5, "bold") if v.status else []
    rows = [(k, wrap(_strip(val), val_w, size)) for k, val in v.rows]
    pad = 0.12
    height = (2 * pad + len(title) * _lh(10.5) + (len(status) * _lh(9.5) + 0.12 if status else 0)
              + sum(len(lines) * lh + 0.04 for _, lines in rows) + 0.05)
    color = {"pass": GREEN, "fail": VERMILLION}.get(v.status or "", RULE)

    def draw(sf: SubFigure, h: float) -> None:
        _rect(sf, h, MARGIN_X, 0.02, TEXT_W, height - 0.04, facecolor=GREY, edgecolor=color,
              lw=1.6)
        y = pad
        for line in title:
            _text(sf, h, MARGIN_X + 0.15, y, line, 10.5, weight="bold")
            y += _lh(10.5)
        if status:
            _rect(sf, h, MARGIN_X + 0.12, y, TEXT_W - 0.24, len(status) * _lh(9.5) + 0.06,
                  facecolor=color, edgecolor="none")
            for line in status:
                _text(sf, h, MARGIN_X + 0.2, y + 0.03, line, 9.5, weight="bold", color="white")
                y += _lh(9.5)
            y += 0.12
        for k, lines in rows:
            _text(sf, h, MARGIN_X + 0.15, y, k, size, weight="bold", color=MUTED)
            for line in lines:
                _text(sf, h, MARGIN_X + 0.15 + key_w, y, line, size)
                y += lh
            y += 0.04

    return [Item(height + 0.08, draw)]


def _figure(b: Fig) -> list[Item]:
    spec = b.spec
    cap = wrap(_strip(f"{spec.title}. {spec.caption}"), TEXT_W, 7.5)
    cap_h = len(cap) * _lh(7.5) + 0.1

    def draw(sf: SubFigure, h: float) -> None:
        parts = sf.subfigures(2, 3, height_ratios=[spec.height, cap_h],
                              width_ratios=[MARGIN_X, TEXT_W, MARGIN_X], wspace=0, hspace=0)
        _draw_laid_out(spec, parts[0, 1])
        for i, line in enumerate(cap):
            parts[1, 1].text(0, 1 - (0.05 + i * _lh(7.5)) / cap_h, line, fontsize=7.5,
                             va="top", color=MUTED, transform=parts[1, 1].transSubfigure)

    return [Item(spec.height + cap_h + 0.1, draw, figure=True)]


def _draw_laid_out(spec: FigureSpec, target: SubFigure) -> None:
    """Draw ``spec`` into a page region with the layout of a standalone figure of the same size.

    The layout is solved on the standalone figure (as for the HTML's SVG) and copied onto the
    region: nested constrained layouts (subfigures of a laid-out page) are under-determined and
    can come out differently from run to run, a single figure's layout does not."""
    ref = Figure(figsize=(TEXT_W, spec.height), layout=StableLayout())
    spec.draw(ref)
    ref.draw_without_rendering()
    spec.draw(target)
    for ax, ref_ax in zip(target.axes, ref.axes, strict=True):
        for which in ("original", "active"):
            pos = ref_ax.get_position(original=which == "original")
            ax._set_position(pos.frozen(), which=which)
    sup, ref_sup = getattr(target, "_suptitle", None), getattr(ref, "_suptitle", None)
    if sup is not None and ref_sup is not None:
        sup.set_position(ref_sup.get_position())
    for leg, ref_leg in zip(target.legends, ref.legends, strict=True):
        leg.set_bbox_to_anchor(ref_leg.get_window_extent().transformed(
            ref.transSubfigure.inverted()), transform=target.transSubfigure)
        leg.set_loc("center")


def _code(b: Code) -> list[Item]:
    lines = [w for line in b.lines for w in wrap(line, TEXT_W - 0.2, 7.0, mono=True)]
    out = []
    for k in range(0, len(lines), 12):
        out.append(_lines_item(lines[k:k + 12], 7.0, x=MARGIN_X + 0.08, bg=GREY, mono=True,
                               pad=0.03))
    return out


def _items(doc: Document) -> list[Item]:
    items: list[Item] = []
    lines = wrap(doc.title, TEXT_W, 18, "bold")
    items.append(_lines_item(lines, 18, weight="bold"))
    items.append(_lines_item(wrap(doc.subtitle, TEXT_W, 9), 9, color=MUTED))
    for b in doc.blocks:
        if isinstance(b, Heading):
            items += _heading(b)
        elif isinstance(b, Para):
            items += _para(b)
        elif isinstance(b, Table):
            items += _table(b)
        elif isinstance(b, Verdict):
            items += _verdict(b)
        elif isinstance(b, Cards):
            for v in b.verdicts:
                items += _verdict(v)
        elif isinstance(b, Fig):
            items += _figure(b)
        elif isinstance(b, Code):
            items += _code(b)
    return items


def paginate(items: list[Item]) -> list[list[Item]]:
    pages: list[list[Item]] = [[]]
    used = 0.0
    for i, it in enumerate(items):
        need = it.height
        j = i
        while items[j].keep_with_next and j + 1 < len(items):  # headings stay with their text
            j += 1
            need += items[j].height
        if pages[-1] and used + min(need, BODY_H) > BODY_H:
            pages.append([])
            used = 0.0
        pages[-1].append(it)
        used += it.height + 0.06
    return pages


def _render_page(items: list[Item], number: int, total: int, footer: str) -> Figure:
    fig = Figure(figsize=(PAGE_W, PAGE_H))
    heights = [MARGIN_TOP]
    for it in items:
        heights += [it.height, 0.06]
    filler = max(0.01, PAGE_H - MARGIN_BOTTOM - sum(heights))
    heights += [filler, MARGIN_BOTTOM]
    sfs = fig.subfigures(len(heights), 1, height_ratios=heights, hspace=0, wspace=0)
    for k, it in enumerate(items):
        it.draw(sfs[1 + 2 * k], it.height)
    foot = sfs[-1]
    foot.text(MARGIN_X / PAGE_W, 0.55, footer, fontsize=7, color=MUTED, va="center")
    foot.text(1 - MARGIN_X / PAGE_W, 0.55, f"page {number} / {total}", fontsize=7, color=MUTED,
              va="center", ha="right")
    return fig


def render_pdf(doc: Document, path: str | Path | None = None) -> bytes:
    """Render ``doc`` to PDF bytes (also written to ``path`` when given)."""
    from certrl._version import __version__

    with matplotlib.rc_context(RC):
        pages = paginate(_items(doc))
        buf = io.BytesIO()
        meta = {"Title": f"{doc.title}: {doc.subtitle}"[:500], "Author": "certrl",
                "Subject": "Robustness report", "Creator": f"certrl {__version__}",
                "Producer": "certrl (matplotlib)", "CreationDate": None, "ModDate": None}
        with PdfPages(buf, metadata=meta) as pdf:
            for n, items in enumerate(pages, 1):
                fig = _render_page(items, n, len(pages),
                                   f"{doc.title} · results updated {doc.date}")
                pdf.savefig(fig)
        data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
