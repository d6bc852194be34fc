"""The report's figures, drawn with matplotlib onto a ``Figure`` or ``SubFigure``.

The same drawing function fills a standalone figure (inline SVG in the HTML report) and a
region of an A4 page (the PDF report), so both formats show the same figures and numbers.
Colours: the Okabe-Ito colour-blind-safe palette; heat maps: ``cividis``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure, SubFigure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.transforms import Bbox

from certrl.report.model import PolicyResults, fnum
from certrl.report.multi import Comparison

# Okabe & Ito (2008), ordered for contrast on white: blue, orange, green, vermillion, sky blue,
# reddish purple, yellow, black.
BLUE, ORANGE, GREEN, VERMILLION, SKY, PURPLE, YELLOW, BLACK = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
PALETTE = [BLUE, ORANGE, GREEN, VERMILLION, SKY, PURPLE, BLACK, YELLOW]

RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text in the SVG (small, selectable)
    "svg.hashsalt": "certrl",  # deterministic ids (set per figure when rendering)
    "pdf.fonttype": 42,  # TrueType in the PDF: selectable, extractable text
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Bitstream Vera Sans", "Verdana", "Arial"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "image.cmap": "cividis",
    "path.simplify": False,
}

FIG_WIDTH = 7.2  # inches: the HTML figure width and the PDF text width
Target = Figure | SubFigure


@dataclass
class FigureSpec:
    """One figure: a stable id (HTML anchor), title, caption, height and drawing function."""

    fig_id: str
    title: str
    caption: str
    height: float
    draw: Callable[[Target], None]


def _legend_below(fig: Target, ax: Any, ncols: int = 2,
                  order: Callable[[str], int] | None = None) -> None:
    """One legend below the figure for the labelled artists of ``ax`` (an axes, or a sequence
    of axes whose entries are joined in order)."""
    handles, labels = [], []
    for a in (ax if isinstance(ax, (list, tuple, np.ndarray)) else [ax]):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    if order is not None and handles:
        pairs = sorted(zip(handles, labels, strict=True), key=lambda hl: order(hl[1]))
        handles, labels = [h for h, _ in pairs], [lab for _, lab in pairs]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False)


def _ecdf(ax: Any, values: np.ndarray, **kw: Any) -> None:
    x = np.sort(values)
    y = np.arange(1, x.size + 1) / x.size
    ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], y]), where="post", **kw)


# ---------------------------------------------------------------------------- single policy
def certificate_figure(pr: PolicyResults, fig_id: str) -> FigureSpec:
    cert = pr.cert or {}
    space = str(cert.get("space", "normalized"))
    sigma, alpha = cert.get("sigma"), cert.get("alpha")
    rows = pr.budgets
    horizon = pr.budget_steps
    mean_len = horizon != pr.horizon

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        b = np.array([r.budget for r in rows])
        bound = np.array([np.nan if r.bound is None else r.bound for r in rows])
        conf = f"{100 * (1 - float(alpha)):g}%" if alpha is not None else "1 − α"
        sm = ((cert.get("clean_smoothed") or {}).get("summary")) or {}
        if sm.get("mean") is not None:
            ax.axhline(sm["mean"], color=GREEN, ls="--", lw=1.2,
                       label=f"clean smoothed mean (σ = {sigma})")
            ci = sm.get("mean_ci")
            if isinstance(ci, list) and None not in ci:
                ax.axhspan(ci[0], ci[1], color=GREEN, alpha=0.12, lw=0)
        un = ((cert.get("clean_unsmoothed") or {}).get("summary")) or {}
        if un.get("mean") is not None:
            ax.axhline(un["mean"], color=BLACK, ls=":", lw=1.0, label="clean unsmoothed mean")
        att = [(r.budget, r.attack_summary) for r in rows
               if r.attack_summary and r.attack_summary.get("mean") is not None]
        if att:
            ab = np.array([a for a, _ in att])
            am = np.array([s["mean"] for _, s in att])
            lo = np.array([s.get("mean_ci", [m, m])[0] for (_, s), m in zip(att, am, strict=True)])
            hi = np.array([s.get("mean_ci", [m, m])[1] for (_, s), m in zip(att, am, strict=True)])
            name = next(r.attack_name for r in rows if r.attack_summary)
            ax.errorbar(ab, am, yerr=[am - lo, hi - am], color=VERMILLION, marker="s", ms=4,
                        capsize=3, lw=1.4, label=f"attacked smoothed policy ({name}), mean ± CI")
            cb = np.interp(ab, b, bound)
            ax.fill_between(ab, cb, am, color=VERMILLION, alpha=0.10, lw=0,
                            label="tightness gap (attack − certificate)")
        qcolors = [SKY, PURPLE, ORANGE, YELLOW]
        qs = sorted({q for r in rows for q in r.percentiles}, key=float)
        for q, c in zip(qs, qcolors, strict=False):
            v = np.array([r.percentiles.get(q, np.nan) for r in rows])
            ax.plot(b, v, color=c, ls="-.", marker=".", lw=1.0,
                    label=f"certified {float(q):g}-quantile lower bound")
        ax.plot(b, bound, color=BLUE, marker="o", ms=5, lw=2.0,
                label=f"certified lower bound on E[return] ({conf})")
        ax.set_xlabel(f"budget B (ℓ2 over the episode, {space} obs)")
        ax.set_ylabel("return")
        ax.set_title(f"{pr.label} on {pr.env_id}: certified return vs. budget")
        if horizon:
            h = float(horizon)
            sec = ax.secondary_xaxis("top", functions=(lambda x: x / math.sqrt(h),
                                                       lambda e: e * math.sqrt(h)))
            what = "the mean episode length" if mean_len else "the horizon"
            sec.set_xlabel(f"per-step ℓ2 radius B/√H (H = {horizon}, {what})", fontsize=8)
            sec.tick_params(labelsize=7)
        keys = ("certified lower bound", "attacked", "tightness", "certified", "clean smoothed",
                "clean unsmoothed")
        _legend_below(fig, ax, order=lambda lab: next(
            (i for i, k in enumerate(keys) if lab.startswith(k)), len(keys)))

    statement = str(cert.get("statement", "")).strip()
    band = cert.get("band") or {}
    cap = (f"{statement} The curve holds simultaneously for every budget (one "
           f"{band.get('method', 'DKW')} band, DKW ε = {band.get('epsilon', '?'):.4g}). "
           if isinstance(band.get("epsilon"), (int, float)) else f"{statement} ")
    if any(r.attack_summary for r in rows):
        cap += ("Squares: the strongest available attack on the smoothed policy at the same "
                "budget; the certificate must stay below it, and the shaded gap measures its "
                "tightness.")
    else:
        cap += ("No empirical attack on the smoothed policy is stored in this file (certrl "
                "certify without --no-attack adds one), so the tightness gap is not shown.")
    return FigureSpec(fig_id, "Certified return vs. attack budget", cap.strip(), 4.6, draw)


def survival_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Certified survival function ``P_adv(R >= v) >= p(B, v)`` per budget, beside the clean
    smoothed empirical survival and the band's lower bound on it (no lower bound ``a`` used)."""
    cert = pr.cert or {}
    sv = cert.get("survival")
    if not isinstance(sv, dict) or not sv.get("thresholds"):
        return None
    v = np.asarray(sv["thresholds"], dtype=float)
    curves = {str(k): np.asarray(p, dtype=float) for k, p in (sv.get("certified") or {}).items()}
    emp = np.asarray(sv.get("clean_empirical") or [], dtype=float)
    alpha = cert.get("alpha")
    conf = f"{100 * (1 - float(alpha)):g}%" if alpha is not None else "1 − α"

    few = v.size <= 3  # a short lattice (one-round Pong: R >= 1): P(R >= v) vs. budget

    def draw_few(fig: Target) -> None:
        ax = fig.subplots()
        bs = np.array([float(k) for k in curves])
        colors = [BLUE, ORANGE, VERMILLION]
        for j, (thr, c) in enumerate(zip(v, colors, strict=False)):
            p = np.array([curves[k][j] for k in curves])
            ax.plot(bs, p, color=c, marker="o", ms=5, lw=1.6,
                    label=f"certified P(R ≥ {thr:g}) under attack")
            if emp.size == v.size:
                ax.axhline(emp[j], color=c, ls=":", lw=1.0,
                           label=f"clean smoothed, empirical P(R ≥ {thr:g})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("budget B (ℓ2 over the episode)")
        ax.set_ylabel("P(return ≥ v)")
        ax.set_title(f"{pr.label}: certified return distribution under attack ({conf})")
        _legend_below(fig, ax, ncols=2)

    def draw(fig: Target) -> None:
        if few:
            draw_few(fig)
            return
        ax = fig.subplots()
        if emp.size == v.size:
            ax.step(v, emp, where="post", color=BLACK, lw=1.0, ls=":",
                    label="clean smoothed, empirical P(R ≥ v)")
        colors = [BLUE, SKY, GREEN, ORANGE, VERMILLION, PURPLE]
        for (b, p), c in zip(curves.items(), colors * 4, strict=False):
            ax.step(v, p, where="pre", color=c, lw=1.6,
                    label=f"certified under attack, B = {b}" if float(b) > 0
                    else "certified at B = 0 (the band)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("return threshold v (certified quantity: clipped per-step rewards)")
        ax.set_ylabel("P(return ≥ v)")
        ax.set_title(f"{pr.label}: certified return distribution under attack ({conf})")
        _legend_below(fig, ax, ncols=3)

    band = cert.get("band") or {}
    cap = ("Every curve is a lower bound on the probability that the attacked smoothed policy's "
           "return reaches v, for every adaptive adversary with the stated total ℓ2 budget, "
           "simultaneously for all thresholds and budgets (one "
           f"{band.get('method', '?')} band at α = {alpha}). Unlike the expected-return "
           "certificate it needs no lower bound on the return: read it as 'with probability "
           "at least p the episode returns at least v'.")
    return FigureSpec(fig_id, "Certified return distribution", cap, 4.0, draw)


def bounds_curve_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Certified fraction of visited states vs. the per-step budget (with its episode-bootstrap
    CI) beside PGD's twin, and (continuous) the certified vs. PGD action deviation."""
    b = pr.bounds
    if not b:
        return None
    curve = [r for r in b.get("curve") or [] if isinstance(r, dict)]
    eps = np.array([float(r["eps"]) for r in curve])
    fr = np.array([float(r["certified_fraction"]["value"]) for r in curve])
    lo = np.array([float(r["certified_fraction"]["ci"][0]) for r in curve])
    hi = np.array([float(r["certified_fraction"]["ci"][1]) for r in curve])
    disc = bool(b.get("discrete"))
    pkey = "fraction_unchanged" if disc else "fraction_within_tol"
    pg = [(float(r["eps"]), float(r["pgd"][pkey])) for r in curve if r.get("pgd")]
    nm = "ℓ∞" if b.get("norm") == "linf" else "ℓ2"
    main_eps = float(b.get("eps", 0.0))

    def draw(fig: Target) -> None:
        axes = fig.subplots(1, 1 if disc else 2, squeeze=False)[0]
        ax = axes[0]
        ax.fill_between(eps, lo, hi, color=BLUE, alpha=0.15, lw=0)
        ax.plot(eps, fr, color=BLUE, marker="o", ms=4, lw=1.8,
                label=f"certified ({str(b.get('method', '')).upper()}), 95% CI")
        if pg:
            ax.plot([e for e, _ in pg], [v for _, v in pg], color=VERMILLION, marker="s", ms=4,
                    lw=1.2, ls="--", label="PGD finds no violation (upper bound)")
        ax.axvline(main_eps, color=BLACK, ls=":", lw=1.0, label=f"eps = {main_eps:g}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"per-step budget eps ({nm}, {b.get('space')} obs)")
        ax.set_ylabel("fraction of visited states")
        ax.set_title("greedy action certified unchanged" if disc
                     else f"action deviation certified ≤ {b.get('tol')}")
        if not disc:
            ax2 = axes[1]
            for q, c in (("0.5", BLUE), ("0.9", SKY)):
                ax2.plot(eps, [r["deviation_quantiles"][q] for r in curve], color=c, marker="o",
                         ms=3, lw=1.6, label=f"certified q{q}")
                pq = [(float(r["eps"]), r["pgd"]["deviation_quantiles"][q]) for r in curve
                      if r.get("pgd")]
                if pq:
                    ax2.plot([e for e, _ in pq], [v for _, v in pq], color=c, ls="--",
                             marker="s", ms=3, lw=1.0, label=f"PGD q{q}")
            ax2.axhline(float(b.get("tol") or 0), color=BLACK, ls=":", lw=1.0, label="tol")
            ax2.set_xlabel(f"per-step budget eps ({nm})")
            ax2.set_ylabel("ℓ∞ action deviation")
            ax2.set_title("certified (upper) vs. PGD (lower) deviation")
        _legend_below(fig, list(axes), ncols=4)

    cap = (f"{b.get('states', '?'):,} states visited by {b.get('episodes', '?')} clean episodes "
           f"(the evaluate seeds). A state counts as certified when bound propagation proves, "
           f"for every perturbation in the {nm} ball of radius eps, that "
           + ("the greedy action cannot change" if disc
              else f"the action moves by at most {b.get('tol')} in every coordinate")
           + ". PGD on a seeded subsample of the same states "
           f"({(b.get('pgd') or {}).get('states', '?')} states) finds how far a real attack "
           "gets: the truth lies between the two curves. Shaded: 95% bootstrap CI over "
           "episodes.")
    return FigureSpec(fig_id, "Per-step certified fraction vs. budget", cap, 3.8, draw)


def bounds_trace_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Certified per-step deviation (or margin) along the first episodes at the main eps."""
    b = pr.bounds
    traces = [t for t in (b or {}).get("traces") or [] if isinstance(t, dict)]
    if not b or not traces:
        return None
    disc = bool(b.get("discrete"))
    key = "margin" if disc else "certified_deviation"

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        for tr, c in zip(traces, [BLUE, ORANGE, GREEN, PURPLE], strict=False):
            ax.plot(tr["t"], tr[key], color=c, lw=0.9, label=f"episode {tr['episode']}")
        if disc:
            ax.axhline(0.0, color=BLACK, ls=":", lw=1.0, label="0 (certified above)")
            ax.set_ylabel("certified logit margin")
        else:
            ax.axhline(float(b.get("tol") or 0), color=BLACK, ls=":", lw=1.0, label="tol")
            ax.set_ylabel("certified ℓ∞ action deviation")
        ax.set_xlabel("step")
        ax.set_title(f"{pr.label}: where in an episode the policy is fragile "
                     f"(eps = {b.get('eps')})")
        _legend_below(fig, ax, ncols=4)

    cap = ("Certified bound at every step of the first clean episodes: "
           + ("a positive margin proves the greedy action unchanged at that step."
              if disc else "peaks are the states where a small perturbation can move the "
              "action most (typically at contacts and take-offs in locomotion)."))
    return FigureSpec(fig_id, "Certified deviation along episodes", cap, 3.2, draw)


def diagnosis_trace_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Sensitivity along the first clean episodes (top panel; terminations marked) and the
    smallest perturbation an attack found at each searched step (bottom panel)."""
    d = pr.diagnosis
    traces = [t for t in (d or {}).get("traces") or [] if isinstance(t, dict) and t.get("t")]
    if not d or not traces:
        return None
    has_eps = any(v is not None for t in traces for v in t.get("min_perturbation") or [])
    nm = "ℓ∞" if d.get("norm") == "linf" else "ℓ2"

    def draw(fig: Target) -> None:
        axes = fig.subplots(2 if has_eps else 1, 1, sharex=True, squeeze=False)[:, 0]
        for tr, c in zip(traces, [BLUE, ORANGE, GREEN, PURPLE], strict=False):
            axes[0].plot(tr["t"], tr["sensitivity"], color=c, lw=0.9,
                         label=f"episode {tr['episode']}")
            if tr.get("terminated"):
                axes[0].axvline(tr["t"][-1], color=c, ls="--", lw=1.0)
                axes[0].plot([tr["t"][-1]], [tr["sensitivity"][-1]], marker="x", color=c,
                             ms=8, ls="none")
            if has_eps:
                pts = [(t, v) for t, v in zip(tr["t"], tr["min_perturbation"], strict=True)
                       if v is not None]
                if pts:
                    axes[1].plot(*zip(*pts, strict=True), color=c, lw=0.8)
        axes[0].set_ylabel("sensitivity σ₁(∂a/∂s)")
        axes[0].set_title(f"{pr.label}: where in an episode the action is fragile")
        if has_eps:
            ms = d.get("min_perturbation") or {}
            if ms.get("published_eps"):
                axes[1].axhline(float(ms["published_eps"]), color=BLACK, ls=":", lw=1.0,
                                label=f"published ε {ms['published_eps']:g}")
            axes[1].set_ylabel(f"smallest {nm} flip found")
            axes[1].set_yscale("log")
        axes[-1].set_xlabel("step")
        _legend_below(fig, list(axes), ncols=4)

    cap = ("Top singular value of the action Jacobian at every step of the first clean "
           "episodes (dashed line and × : termination, e.g. a fall)"
           + ("; below, the smallest perturbation an attack found that changes the action at "
              "that step (an upper bound on the true minimum: lower is more fragile)"
              if has_eps else "") + ". Empirical, no guarantee.")
    return FigureSpec(fig_id, "Sensitivity along episodes", cap, 4.6 if has_eps else 3.0, draw)


def diagnosis_dimensions_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Share of the most sensitive direction per named observation dimension (and the compared
    policy's on the same states)."""
    d = pr.diagnosis
    if not d or not d.get("dimension_shares"):
        return None
    rows = d["dimension_shares"]
    names = d.get("observation_names") or [r["name"] for r in rows]
    share = np.zeros(len(names))
    for r in rows:
        share[int(r["index"])] = float(r["share"])
    cmp = d.get("comparison") or None
    other = None
    if cmp and cmp.get("dimension_shares"):
        other = np.zeros(len(names))
        for r in cmp["dimension_shares"]:
            other[int(r["index"])] = float(r["share"])
    show = np.argsort(-share, kind="stable")[:20]

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        y = np.arange(show.size)
        h = 0.4 if other is not None else 0.7
        ax.barh(y - (h / 2 if other is not None else 0), share[show], height=h, color=BLUE,
                label=pr.label)
        if other is not None:
            ax.barh(y + h / 2, other[show], height=h, color=ORANGE, label=str(cmp["policy"]))
        ax.set_yticks(y, [names[i] for i in show])
        ax.invert_yaxis()
        ax.set_xlabel("share of the most sensitive direction")
        ax.set_title(f"{pr.label}: which observation dimensions carry the fragility")
        _legend_below(fig, ax)

    cap = ("Per observation dimension, the mean squared weight of the top singular direction "
           "of the action Jacobian (weighted by its singular value squared), over the visited "
           "states" + (f"; orange: {cmp['policy']} on the same states and coordinates "
                       f"(unstable-subspace overlap {cmp['subspace_overlap']:.2f})"
                       if other is not None else "") + ".")
    return FigureSpec(fig_id, "Fragile observation dimensions", cap,
                      1.4 + 0.22 * show.size, draw)


def diagnosis_heatmap_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """|cos| between the top directions of every pair of steps of one episode."""
    d = pr.diagnosis
    hm = (d or {}).get("similarity_heatmap")
    if not hm or not hm.get("abs_cos"):
        return None
    m = np.asarray(hm["abs_cos"], dtype=float)
    steps = hm["steps"]

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        # interpolation "none": the SVG keeps the matrix's own pixels (the viewer scales them)
        im = ax.imshow(m, origin="lower", cmap="cividis", vmin=0.0, vmax=1.0,
                       interpolation="none", aspect="auto",
                       extent=(steps[0], steps[-1], steps[0], steps[-1]))
        ax.grid(False)
        ax.set_xlabel("step")
        ax.set_ylabel("step")
        ax.set_title(f"{pr.label}: does the fragile direction stay put? (episode "
                     f"{hm['episode']})")
        fig.colorbar(im, ax=ax, label="|cos| of the top directions")

    cap = (f"|cos| between the most sensitive observation directions at every pair of steps of "
           f"episode {hm['episode']} ({len(steps)} steps shown): bright blocks are phases "
           "where the fragile direction persists, dark stripes where it jumps (the oscillation "
           "Korkmaz (2024) reports for adversarially trained policies).")
    return FigureSpec(fig_id, "Direction similarity over time", cap, 4.4, draw)


def attack_figure(pr: PolicyResults, fig_id: str) -> FigureSpec:
    attacks = pr.attack_list
    clean = pr.attack_clean_summary or pr.eval_summary

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        names, means, lows, highs, colors = [], [], [], [], []
        if clean and clean.get("mean") is not None:
            names.append("clean (no attack)")
            means.append(clean["mean"])
            ci = clean.get("mean_ci") or [clean["mean"]] * 2
            lows.append(ci[0])
            highs.append(ci[1])
            colors.append(GREEN)
        for a in attacks:
            if a.mean is None:
                continue
            names.append(a.name)
            means.append(a.mean)
            ci = (a.summary or {}).get("mean_ci") or [a.mean, a.mean]
            lows.append(ci[0] if ci[0] is not None else a.mean)
            highs.append(ci[1] if ci[1] is not None else a.mean)
            colors.append(VERMILLION if pr.strongest is a else BLUE)
        y = np.arange(len(names))[::-1]
        m = np.array(means, dtype=float)
        err = [m - np.array(lows, dtype=float), np.array(highs, dtype=float) - m]
        ax.barh(y, m, color=colors, alpha=0.85, height=0.6)
        ax.errorbar(m, y, xerr=err, fmt="none", ecolor=BLACK, capsize=3, lw=1.0)
        ax.set_yticks(y, names)
        ax.grid(axis="y", visible=False)
        span = float(np.nanmax(np.abs(m))) if m.size else 1.0
        for yi, mi, hi in zip(y, m, highs, strict=True):
            ax.text(max(mi, hi) + 0.01 * span if mi >= 0 else min(mi, 0) + 0.01 * span, yi,
                    f" {mi:,.1f}", va="center", fontsize=7.5)
        ax.axvline(0, color=BLACK, lw=0.6)
        ax.set_xlabel("return (mean over episodes, 95% CI)")
        ax.set_title(f"{pr.label} on {pr.env_id}: return under attack\n{pr.threat_text()}",
                     fontsize=9.5)

    n = len(attacks) + 1
    cap = ("Mean return per attack with 95% stratified-bootstrap CIs; the strongest attack "
           "(lowest mean) in vermillion, the clean return in green. Threat model: "
           f"{pr.threat_text()}.")
    return FigureSpec(fig_id, "Return under each attack", cap, 1.5 + 0.32 * n, draw)


def distribution_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    series: list[tuple[str, np.ndarray, str, str]] = []
    clean = pr.attack_clean_returns if pr.attack_clean_returns is not None else pr.eval_returns
    if clean is not None:
        series.append(("clean", clean, GREEN, "-"))
    colors = [VERMILLION, BLUE, ORANGE, PURPLE, SKY, BLACK]
    for a, c in zip([a for a in pr.attack_list if a.returns is not None], colors, strict=False):
        series.append((a.name, a.returns, c, "--" if a is not pr.strongest else "-"))
    if not series:
        return None

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        for name, v, c, ls in series:
            _ecdf(ax, v, color=c, ls=ls, lw=1.6 if name in ("clean",) else 1.2,
                  label=f"{name} (n = {v.size})")
        ax.set_xlabel("episode return")
        ax.set_ylabel("fraction of episodes ≤ return (ECDF)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{pr.label} on {pr.env_id}: return distribution, clean vs. attacked")
        _legend_below(fig, ax, ncols=3)

    n_att = len(series) - (1 if clean is not None else 0)
    extra = f" (the {n_att} attacks with stored returns)" if n_att else ""
    cap = ("Empirical CDFs of the episode returns: a curve further left means lower returns"
           f"{extra}. " + (f"Threat model: {pr.threat_text()}." if pr.attacks else ""))
    return FigureSpec(fig_id, "Return distributions", cap.strip(), 4.0, draw)


def smoothed_distribution_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """ECDFs of the smoothed policy's returns (clean and attacked at each budget) with the
    certified quantile lower bounds. Bounds equal to the trivial lower bound ``a`` (no
    information) would stretch the axis to ``a``: they are drawn as hollow markers at the left
    edge instead."""
    cert = pr.cert or {}
    sm = cert.get("smoothed_clipped_returns") or cert.get("smoothed_returns")
    if not isinstance(sm, list) or not sm or not pr.budgets:
        return None
    smoothed = np.asarray([v for v in sm if v is not None], dtype=float)
    if not smoothed.size:
        return None
    rows = [r for r in pr.budgets if r.budget > 0]
    colors = [BLUE, ORANGE, VERMILLION, PURPLE, SKY, BLACK]
    lo = cert.get("reward_lower_bound")
    lo = float(lo) if isinstance(lo, (int, float)) and math.isfinite(lo) else -math.inf

    def trivial(v: float) -> bool:
        return v <= lo + 1e-9 * max(1.0, abs(lo))

    data = [smoothed] + [r.attack_returns for r in rows if r.attack_returns is not None]
    real = [v for r in rows for v in r.percentiles.values() if not trivial(v)]
    xmin = float(min([*(float(d.min()) for d in data), *real]))
    xmax = float(max(float(d.max()) for d in data))
    pad = 0.04 * (xmax - xmin) if xmax > xmin else 1.0
    any_trivial = any(trivial(v) for r in rows for v in r.percentiles.values())

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        _ecdf(ax, smoothed, color=GREEN, lw=1.6,
              label=f"smoothed, clean (σ = {cert.get('sigma')}, n = {smoothed.size})")
        for r, c in zip(rows, colors, strict=False):
            if r.attack_returns is not None:
                _ecdf(ax, r.attack_returns, color=c, lw=1.1, ls="--",
                      label=f"smoothed, attacked at B = {r.budget:g}")
            qs = sorted(r.percentiles, key=float)
            pts = [(r.percentiles[q], float(q)) for q in qs if not trivial(r.percentiles[q])]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="none", marker=">", ms=6,
                        color=c, label=f"certified quantiles at B = {r.budget:g}")
            triv = [float(q) for q in qs if trivial(r.percentiles[q])]
            if triv:
                ax.plot([xmin - 0.5 * pad] * len(triv), triv, ls="none", marker="<", ms=6,
                        mfc="none", mec=c)
        if any_trivial:
            ax.plot([], [], ls="none", marker="<", ms=6, mfc="none", mec=BLACK,
                    label=f"certified quantile only ≥ a = {fnum(lo)} (trivial; off the axis)")
        ax.set_xlim(xmin - pad, xmax + pad)
        ax.set_xlabel("episode return (certified quantity: per-step rewards clipped to bounds)")
        ax.set_ylabel("fraction of episodes ≤ return")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{pr.label}: smoothed-policy returns and certified quantiles")
        _legend_below(fig, ax, ncols=2, order=lambda lab: int(lab.startswith("certified")))

    cap = ("Triangles ▶ at (v, q): with the stated confidence the q-quantile of the attacked "
           "return at budget B is at least v, for every adversary within B; every attacked "
           "ECDF at that budget must pass at or to the right of its triangles.")
    if any_trivial:
        cap += (" Hollow ◀ at the left edge: at that budget and quantile the certificate is "
                "only the trivial lower bound a.")
    return FigureSpec(fig_id, "Smoothed returns and certified quantiles", cap, 4.2, draw)


def per_state_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    ps = (pr.cert or {}).get("per_state")
    frac = ps.get("fraction_certified") if isinstance(ps, dict) else None
    if not isinstance(frac, dict) or not frac:
        return None
    pts = sorted((float(k), float(v)) for k, v in frac.items() if v is not None)

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=BLUE, marker="o")
        ax.set_xlabel(f"ℓ2 radius per state ({(pr.cert or {}).get('space', '')} obs)")
        ax.set_ylabel("fraction of visited states certified")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{pr.label}: per-state certified radius of the majority-vote action")

    cap = (f"{ps.get('states', '?')} visited states; a state counts as certified at radius r "
           "when the smoothed policy's majority-vote action provably does not change under any "
           "per-step ℓ2 perturbation ≤ r.")
    return FigureSpec(fig_id, "Per-state certificates", cap, 3.2, draw)


def stress_figure(pr: PolicyResults, fig_id: str) -> FigureSpec | None:
    """Mean return over the dynamics stress set: a heat map for a two-parameter grid (worst
    cell outlined, nominal model starred when inside the grid), a line for one parameter, a
    scatter coloured by mean return for random samples."""
    g = pr.stress_grid
    if g is None:
        return None
    params, mean = g["params"], g["mean"]
    finite = mean[np.isfinite(mean)]
    if not finite.size:
        return None
    reduced = f" (minimum over {', '.join(g['reduced'])})" if g.get("reduced") else ""
    zlabel = "mean episode return" + reduced

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        if g["kind"] == "samples":
            pts = g["points"]
            x = pts[:, 0]
            y = pts[:, 1] if pts.shape[1] > 1 else np.zeros_like(x)
            sc = ax.scatter(x, y, c=mean, cmap="cividis", s=22, edgecolors="none")
            k = int(np.nanargmin(mean))
            ax.plot([x[k]], [y[k]], ls="none", marker="s", ms=10, mfc="none",
                    mec=VERMILLION, mew=2, label="worst point")
            ax.set_xlabel(params[0])
            ax.set_ylabel(params[1] if len(params) > 1 else "")
            fig.colorbar(sc, ax=ax, label=zlabel)
            _legend_below(fig, ax)
        elif g["values2"] is None:
            x = g["values1"]
            ax.plot(x, mean, color=BLUE, marker="o", lw=1.6, label="mean return per value")
            k = int(np.nanargmin(mean))
            ax.plot([x[k]], [mean[k]], ls="none", marker="s", ms=10, mfc="none",
                    mec=VERMILLION, mew=2, label="worst value")
            ax.set_xlabel(params[0])
            ax.set_ylabel(zlabel)
            _legend_below(fig, ax)
        else:
            im = ax.imshow(mean, origin="lower", aspect="auto", cmap="cividis")
            ax.set_yticks(range(len(g["values1"])), [f"{v:g}" for v in g["values1"]])
            ax.set_xticks(range(len(g["values2"])), [f"{v:g}" for v in g["values2"]])
            ax.set_ylabel(params[0])
            ax.set_xlabel(params[1])
            ax.grid(False)
            mid = float(np.median(finite))
            if mean.size <= 100:
                for i in range(mean.shape[0]):
                    for j in range(mean.shape[1]):
                        if np.isfinite(mean[i, j]):
                            ax.text(j, i, f"{mean[i, j]:,.0f}", ha="center", va="center",
                                    fontsize=7, color="white" if mean[i, j] < mid else "black")
            i, j = np.unravel_index(int(np.nanargmin(mean)), mean.shape)
            ax.add_patch(matplotlib.patches.Rectangle(
                (j - 0.5, i - 0.5), 1, 1, fill=False, ec=VERMILLION, lw=2.0))
            nom = g.get("nominal_point")
            if nom and None not in nom:
                v1, v2 = g["values1"], g["values2"]
                if v1[0] <= nom[0] <= v1[-1] and v2[0] <= nom[1] <= v2[-1]:
                    ax.plot(np.interp(nom[1], v2, np.arange(v2.size)),
                            np.interp(nom[0], v1, np.arange(v1.size)), marker="*", ms=13,
                            color=ORANGE, mec=BLACK, mew=0.6, ls="none")
            fig.colorbar(im, ax=ax, label=zlabel)
        ax.set_title(f"{pr.label} on {pr.env_id}: mean return under dynamics changes")

    kind = {"samples": "random points", "grid": "grid cells"}[g["kind"]]
    cap = (f"Mean episode return at each evaluated value of {' and '.join(params)}{reduced} "
           f"({g['cells']} {kind}"
           + (f", {g['episodes']} episodes each" if g.get("episodes") else "") + "); the worst "
           "one outlined in vermillion" + (", the nominal model starred"
                                           if g.get("nominal_point") else "") + ".")
    if g.get("drift"):
        cap += (f" Parameters drift during each episode (rate {g['drift']:g} of the range per "
                "step, TC-RMDP); values are the starting points.")
    if g.get("uncertainty_set"):
        cap += f" Uncertainty set: {g['uncertainty_set']}."
    return FigureSpec(fig_id, "Dynamics stress test", cap, 4.2, draw)


# ---------------------------------------------------------------------------- several policies
def intervals_figure(comp: Comparison, fig_id: str) -> FigureSpec:
    metrics = list(next(iter(comp.intervals.values())).keys())
    labels = comp.labels
    n = len(labels)

    def draw(fig: Target) -> None:
        ncols = 2
        nrows = math.ceil(len(metrics) / ncols)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, m in zip(axes, metrics, strict=False):
            for i, lab in enumerate(labels):
                y = n - 1 - i
                for est, dy, c, tag in (
                    (comp.intervals[lab][m], 0.17 if lab in comp.attacked_intervals else 0.0,
                     BLUE, "clean"),
                    (comp.attacked_intervals.get(lab, {}).get(m), -0.17, VERMILLION,
                     "strongest attack"),
                ):
                    if est is None:
                        continue
                    ax.barh(y + dy, est.high - est.low, left=est.low, height=0.28, color=c,
                            alpha=0.75, label=tag if i == 0 else None)
                    ax.plot([est.point, est.point], [y + dy - 0.14, y + dy + 0.14], color=BLACK,
                            lw=1.5)
            ax.set_yticks(range(n)[::-1], labels)
            ax.set_title(m)
            ax.grid(axis="y", visible=False)
            ax.set_xlabel(comp.score_label if m != "optimality gap" else "gap to score 1",
                          fontsize=7.5)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        handles, labs = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labs, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Aggregate metrics across policies (95% stratified-bootstrap CIs)")

    cap = (f"{comp.note} Bars: 95% CIs, black ticks: point estimates; blue: clean evaluation, "
           "vermillion: under each policy's strongest attack. IQM = interquartile mean; "
           "optimality gap = mean shortfall below a normalized score of 1 (lower is better).")
    return FigureSpec(fig_id, "Aggregate metrics (IQM, mean, median, optimality gap)", cap,
                      1.6 + 1.1 * math.ceil(len(metrics) / 2) * max(1.0, 0.45 * n), draw)


def profiles_figure(comp: Comparison, fig_id: str) -> FigureSpec:
    def draw(fig: Target) -> None:
        ax = fig.subplots()
        for i, lab in enumerate(comp.labels):
            c = PALETTE[i % len(PALETTE)]
            p, lo, hi = comp.profiles[lab]
            ax.plot(comp.taus, p, color=c, lw=1.6, label=f"{lab} (clean)")
            ax.fill_between(comp.taus, lo, hi, color=c, alpha=0.15, lw=0)
            if lab in comp.attacked_profiles:
                p, lo, hi = comp.attacked_profiles[lab]
                ax.plot(comp.taus, p, color=c, lw=1.2, ls="--",
                        label=f"{lab} ({comp.attacked_names[lab]})")
                ax.fill_between(comp.taus, lo, hi, color=c, alpha=0.08, lw=0)
        ax.set_xlabel(f"threshold τ ({comp.score_label})")
        ax.set_ylabel("fraction of episodes with score > τ")
        ax.set_ylim(0, 1.02)
        ax.set_title("Performance profiles (95% CI bands)")
        _legend_below(fig, ax, ncols=2)

    cap = ("Score distributions (Agarwal et al. 2021): the fraction of episodes scoring above each "
           "threshold; solid clean, dashed under the strongest attack, shaded 95% pointwise CIs. "
           "A profile that lies above another dominates it.")
    return FigureSpec(fig_id, "Performance profiles", cap, 4.4, draw)


def poi_figure(comp: Comparison, fig_id: str) -> FigureSpec:
    pairs = comp.poi

    def draw(fig: Target) -> None:
        ax = fig.subplots()
        n = len(pairs)
        for i, (_x, _y, e) in enumerate(pairs):
            yy = n - 1 - i
            ax.barh(yy, e.high - e.low, left=e.low, height=0.5, color=BLUE, alpha=0.55)
            ax.plot([e.point, e.point], [yy - 0.25, yy + 0.25], color=BLACK, lw=1.5)
        ax.set_yticks(range(n)[::-1], [f"P({x} > {y})" for x, y, _ in pairs])
        ax.axvline(0.5, color=BLACK, ls=":", lw=1.0)
        ax.set_xlim(0, 1)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("probability of improvement (clean evaluation returns, 95% CI)")
        ax.set_title("Probability of improvement between policies")

    cap = ("P(X > Y): the probability that an episode of X scores higher than an episode of Y "
           "(Mann-Whitney, ties count ½), with 95% bootstrap CIs; 0.5 = no difference. An "
           "interval entirely above 0.5 is a statistically meaningful improvement.")
    return FigureSpec(fig_id, "Probability of improvement", cap, 1.4 + 0.45 * len(pairs), draw)



# ---------------------------------------------------------------------------- deterministic layout
class StableLayout(ConstrainedLayoutEngine):
    """Constrained layout whose result is rounded to 1e-6 of the figure size.

    The constraint solver (kiwisolver) can differ in the last bits between processes; the PDF
    writes coordinates with 10 decimals, so unrounded layouts would make the bytes of the same
    report differ from run to run."""

    def execute(self, fig: Any) -> Any:
        out = super().execute(fig)
        _round_layout(fig)
        return out


def _round_bbox(b: Bbox) -> Bbox:
    return Bbox(np.round(b.get_points(), 6))


def _round_layout(fig: Any) -> None:
    for sf in fig.subfigs:
        sf.bbox_relative.set_points(np.round(sf.bbox_relative.get_points(), 6))
        _round_layout(sf)
    for ax in fig.axes:
        ax._set_position(_round_bbox(ax.get_position(original=True)), which="original")
        ax._set_position(_round_bbox(ax.get_position(original=False)), which="active")
