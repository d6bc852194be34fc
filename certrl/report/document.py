"""The report as a list of blocks (headings, paragraphs, tables, verdicts, figures).

Both renderers (:mod:`certrl.report.html`, :mod:`certrl.report.pdf`) walk the same blocks, so
the HTML and the PDF show the same numbers in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from certrl._version import __version__
from certrl.report import figures as F
from certrl.report.model import (
    Attack,
    PolicyResults,
    _num,
    fci,
    fnum,
    norm_label,
    report_date,
    slug,
)
from certrl.report.multi import (
    Comparison,
    compare,
    poi_table,
    single_run_warning,
    summary_table,
)


@dataclass
class Heading:
    text: str
    level: int
    anchor: str


@dataclass
class Para:
    text: str
    kind: str = "p"  # p | missing | note | statement | small


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    wrap: bool = False  # long text cells (HTML: wrap; numeric tables keep cells on one line)
    wrap_cols: tuple[int, ...] = ()  # columns that wrap in a numeric table (HTML)


@dataclass
class Verdict:
    title: str
    rows: list[tuple[str, str]]
    status: str | None = None  # "pass" | "fail" | None
    status_text: str = ""


@dataclass
class Cards:
    verdicts: list[Verdict]


@dataclass
class Fig:
    spec: F.FigureSpec


@dataclass
class Code:
    lines: list[str]


Block = Heading | Para | Table | Verdict | Cards | Fig | Code


@dataclass
class Document:
    title: str
    subtitle: str
    date: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def figures(self) -> list[F.FigureSpec]:
        return [b.spec for b in self.blocks if isinstance(b, Fig)]

    def toc(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.level == 2]


GLOSSARY: list[tuple[str, str]] = [
    ("ℓ∞ per-step budget ε (attacks)",
     "At every step the adversary may change each coordinate of the observation by at most ε. "
     "Budgets are in the normalized observation space (o − μ) / √(var + ε₀) of the policy's "
     "observation normalization — the space of the SA-PPO / ATLA / PA-AD budgets (Hopper "
     "0.075, Walker2d 0.05, HalfCheetah and Ant 0.15) — or in raw observations when the threat "
     "model says so."),
    ("Episode ℓ2 budget B (certificates)",
     "The adversary may perturb every observation of an episode, adaptively, as long as the "
     "total ℓ2 norm √(Σ_t ‖δ_t‖²) over the whole episode is at most B (in the space named next "
     "to B). Spread evenly over H steps this is a per-step ℓ2 radius of B/√H."),
    ("Smoothing σ",
     "Standard deviation of the Gaussian noise added to every observation of the smoothed "
     "policy. Certificates hold for the smoothed policy only, which is why its clean return is "
     "shown next to the unsmoothed policy's."),
    ("α (failure probability)",
     "Each certificate holds with probability at least 1 − α over certrl's random sampling. The "
     "expected-return curve uses one DKW band, so all its budgets hold simultaneously."),
    ("Certified return",
     "A lower bound on the expected return of the smoothed policy against every adversary "
     "within budget B (policy smoothing, Kumar, Levine & Feizi, ICLR 2022). Per-step rewards "
     "are clipped to documented bounds; the clipped-step count is reported."),
    ("Certified quantile",
     "A lower bound on the q-quantile of the smoothed policy's attacked return."),
    ("Tightness gap",
     "Empirical attacked return minus the certified bound at the same budget. A large gap means "
     "a loose certificate or a weak attack; a negative gap would be a bug."),
    ("Confidence intervals",
     "95% percentile stratified-bootstrap intervals (2000 resamples, fixed seed), as in "
     "Agarwal et al., NeurIPS 2021 (rliable)."),
    ("IQM, optimality gap, performance profile, probability of improvement",
     "Interquartile mean (mean of the middle 50% of episodes); mean shortfall below a "
     "normalized score of 1; fraction of episodes scoring above each threshold; P(X > Y) that "
     "an episode of X beats one of Y (ties ½) — all from Agarwal et al. 2021."),
]


# ---------------------------------------------------------------------------- builders
def _verdict(it: PolicyResults) -> Verdict:
    pol = it.policy
    rows: list[tuple[str, str]] = []
    kind = " · ".join(str(v) for v in (pol.get("format"), pol.get("algorithm")) if v)
    sha = str(pol.get("sha256") or "")[:12]
    rows.append(("Policy", " · ".join(v for v in (it.policy_spec, kind,
                                                   f"sha256 {sha}…" if sha else "") if v)))
    h = it.horizon
    rows.append(("Environment", f"{it.env_id}" + (f" ({it.env_alias})" if it.env_alias else "")
                 + (f", horizon {h}" if h else "")))
    s = it.eval_summary
    if s:
        rows.append(("Clean return", f"mean {fnum(s.get('mean'))} {fci(s.get('mean_ci'))}, "
                     f"IQM {fnum(s.get('iqm'))} {fci(s.get('iqm_ci'))}, n = {s.get('n', '?')} "
                     "episodes (95% CI)"))
    else:
        rows.append(("Clean return", it.missing.get("evaluation", "-")))
    if it.strongest is not None:
        a = it.strongest
        drop = ""
        clean = (it.attack_clean_summary or it.eval_summary or {}).get("mean")
        if a.drop_mean is not None:
            pct = f", {100 * a.drop_mean / abs(clean):.0f}%" if clean else ""
            drop = f", drop {fnum(a.drop_mean)}{pct}"
        rows.append(("Strongest attack", f"{a.name}: mean {fnum(a.mean)} "
                     f"{fci((a.summary or {}).get('mean_ci'))}{drop} — {it.threat_text()}"))
    else:
        rows.append(("Strongest attack", it.missing.get("attacks", "-")))
    status, status_text = None, ""
    row, why = it.headline_budget()
    if row is not None:
        cert = it.cert or {}
        alpha = cert.get("alpha")
        conf = f"{100 * (1 - float(alpha)):g}%" if alpha is not None else "1 − α"
        eps = f", per-step ℓ2 ≈ {row.per_step_eps:.4g}" if row.per_step_eps is not None else ""
        rows.append(("Certified return", f"≥ {fnum(row.bound)} at B = {row.budget:g} "
                     f"({cert.get('space', '?')} obs{eps}; {why}), σ = {cert.get('sigma')}, "
                     f"confidence {conf}"))
        gate = cert.get("gate")
        if isinstance(gate, dict) and gate.get("passed") is not None:
            status = "pass" if gate["passed"] else "fail"
            value = gate.get("value", row.bound)
            undecided = " (undecided: raise --episodes)" if str(
                gate.get("decision", "")).lower() == "undecided" else ""
            status_text = (f"{'PASS' if gate['passed'] else 'FAIL'}: certified return "
                           f"{fnum(value)} at B = {gate.get('budget')} "
                           f"{'≥' if gate['passed'] else '<'} threshold "
                           f"{fnum(gate.get('threshold'))} (certify --fail-under){undecided}")
    else:
        rows.append(("Certified return", it.missing.get("certificates", "-")))
    if it.gate_checks:  # --require: overrides the certify gate
        status, status_text = _gate_status(it.gate_checks)
        for c in it.gate_checks:
            tag = {"pass": "PASS", "fail": "FAIL", "error": "NOT EVALUATED"}[c.status]
            rows.append(("Gate", f"{tag}: {c.message.replace(f'; {c.file}', '')}"))
    return Verdict(f"{it.label} on {it.env_id}", rows, status, status_text)


def _gate_status(checks: list) -> tuple[str, str]:
    """Verdict status of ``--require`` checks: pass only if every requirement holds; a
    requirement the file cannot answer fails the verdict (as in ``certrl gate``)."""
    n = len(checks)
    failed = [c for c in checks if c.status == "fail"]
    errors = [c for c in checks if c.status == "error"]
    if not failed and not errors:
        return "pass", ("PASS: the gate requirement holds" if n == 1
                        else f"PASS: all {n} gate requirements hold")
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {n} gate requirements failed ("
                     + "; ".join(c.requirement.canonical for c in failed) + ")")
    if errors:
        parts.append(f"{len(errors)} could not be evaluated")
    return "fail", "FAIL: " + ", ".join(parts)


def _budget_table(it: PolicyResults) -> Table:
    qs = sorted({q for r in it.budgets for q in r.percentiles}, key=float)
    headers = ["B (ℓ2, episode)", "per-step ℓ2 B/√H", "certified E[R] ≥",
               *[f"certified q{q} ≥" for q in qs], "attacked E[R] [95% CI]", "gap"]
    rows = []
    for r in it.budgets:
        s = r.attack_summary or {}
        am = s.get("mean")
        gap = fnum(am - r.bound) if am is not None and r.bound is not None else "-"
        rows.append([f"{r.budget:g}", f"{r.per_step_eps:.4g}" if r.per_step_eps is not None
                     else "-", fnum(r.bound), *[fnum(r.percentiles.get(q)) for q in qs],
                     f"{fnum(am)} {fci(s.get('mean_ci'))}" if am is not None else "-", gap])
    return Table(headers, rows)


def _cert_notes(it: PolicyResults) -> list[Para]:
    c = it.cert or {}
    out = []
    sm = (c.get("clean_smoothed") or {}).get("summary") or {}
    un = (c.get("clean_unsmoothed") or {}).get("summary") or {}
    bits = [f"σ = {c.get('sigma')} ({c.get('space', '?')} observations)",
            f"α = {c.get('alpha')}", f"{c.get('episodes', '?')} smoothed episodes, seed "
            f"{c.get('seed', '?')}"]
    if sm:
        bits.append(f"clean smoothed return {fnum(sm.get('mean'))} {fci(sm.get('mean_ci'))}")
    if un:
        bits.append(f"clean unsmoothed return {fnum(un.get('mean'))} {fci(un.get('mean_ci'))}")
    lo, hi = c.get("reward_lower_bound"), c.get("reward_upper_bound")
    if lo is not None:
        bits.append(f"episode return bounds [{fnum(lo)}, {fnum(hi)}] "
                    f"({c.get('bounds_kind', it.env.get('bounds_kind', '?'))})")
    out.append(Para("; ".join(bits) + ".", "small"))
    if c.get("clipped_steps"):
        out.append(Para(f"Warning: {c['clipped_steps']} steps had rewards outside the per-step "
                        "bounds and were clipped in the certified return.", "note"))
    thr = c.get("attack_threat")
    rows = c.get("budgets") or []
    if isinstance(thr, dict) and thr.get("comparable") and rows:
        big = rows[-1]
        need = _num(thr.get("episode_l2_equivalent"))
        if need and _num(big.get("budget")) is not None:
            steps = thr.get("steps")
            where = ("every step of an episode" if not steps or steps == it.horizon
                     else f"each of the mean episode's {steps} steps")
            tail = (" No per-step certificates of pixel policies yet (certrl bound has no "
                    "convolution bounds)." if it.pixels else " Per-step certificates at the "
                    "attacks' ε are in the per-step bounds section (certrl bound).")
            out.append(Para(
                f"Threat scale: the attacks' ℓ∞ ε = {_num(thr.get('eps')) or 0:.4g} per step "
                f"({thr.get('source', '')}) on {where} is an episode ℓ2 "
                f"budget of {need:,.2f}; the largest certified budget B = {big['budget']:g} is "
                f"{float(big['budget']) / need:.1%} of it (ℓ∞ "
                f"{_num(big.get('per_step_linf_eps')) or 0:.5f} per step).{tail}", "note"))
    return out


def _bounds_table(it: PolicyResults) -> Table:
    b = it.bounds or {}
    disc = bool(b.get("discrete"))
    if disc:
        headers = ["eps", "certified unchanged [95% CI]", "PGD: unchanged"]
    else:
        headers = ["eps", f"certified ≤ {b.get('tol')} [95% CI]", "PGD: ≤ tol",
                   "certified dev. q0.5 / q0.9", "PGD dev. q0.5 / q0.9"]
    rows = []
    for r in b.get("curve") or []:
        fr = r.get("certified_fraction") or {}
        ci = fr.get("ci") or [None, None]
        cell = f"{100 * fr.get('value', float('nan')):.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        pg = r.get("pgd") or {}
        if disc:
            pv = pg.get("fraction_unchanged")
            rows.append([f"{r['eps']:g}", cell, "-" if pv is None else f"{100 * pv:.1f}%"])
        else:
            pv = pg.get("fraction_within_tol")
            q = r.get("deviation_quantiles") or {}
            pq = pg.get("deviation_quantiles") or {}
            rows.append([f"{r['eps']:g}", cell, "-" if pv is None else f"{100 * pv:.1f}%",
                         f"{fnum(q.get('0.5'))} / {fnum(q.get('0.9'))}",
                         f"{fnum(pq.get('0.5'))} / {fnum(pq.get('0.9'))}" if pq else "-"])
    return Table(headers, rows,
                 f"{str(b.get('method', '')).upper()} bounds, {b.get('norm')} ball in the "
                 f"{b.get('space')} observation space; the lower CI end at eps is the gate "
                 f"metric `certified_fraction@eps={b.get('eps')}`. The fraction is over the "
                 "states the clean policy visits, not states an attacker could steer to.")


def _diagnosis_table(it: PolicyResults) -> Table:
    d = it.diagnosis or {}
    s = d.get("sensitivity") or {}
    c = d.get("top_direction_cos_between_steps") or {}
    rows = [["sensitivity σ₁ (median / q0.9)", f"{fnum(s.get('0.5'))} / {fnum(s.get('0.9'))}"],
            ["top direction |cos| between steps (mean)", fnum(c.get("mean"))]]
    ms = d.get("min_perturbation")
    if ms:
        q = ms.get("quantiles") or {}
        rows.append([f"smallest {ms.get('norm')} flip found (median [q0.1, q0.9])",
                     f"{fnum(q.get('0.5'))} [{fnum(q.get('0.1'))}, {fnum(q.get('0.9'))}] on "
                     f"{100 * ms.get('found_fraction', 0):.0f}% of {ms.get('states')} states"])
        if ms.get("fraction_within_published_eps") is not None:
            rows.append([f"states flipped within the published ε {ms.get('published_eps')}",
                         f"{100 * ms['fraction_within_published_eps']:.1f}%"])
    for j, b in enumerate(d.get("unstable_subspace") or []):
        tops = ", ".join(f"{t['name']} {t['weight']:+.2f}" for t in b.get("top") or [])
        rows.append([f"unstable direction {j + 1} (eigenvalue {fnum(b.get('eigenvalue'))})",
                     tops])
    cmp = d.get("comparison")
    if cmp:
        angles = ", ".join(f"{a:.0f}°" for a in cmp.get("principal_angles_deg") or [])
        rows.append([f"overlap with {cmp.get('policy')}'s unstable subspace",
                     f"{fnum(cmp.get('subspace_overlap'))} (principal angles {angles})"])
    return Table(["quantity", "value"], rows,
                 f"{d.get('states')} states of {d.get('episodes')} clean episodes, "
                 f"{d.get('space')} observation space. Empirical, no guarantee: the smallest "
                 "flips are upper bounds found by an attack (certrl bound gives the certified "
                 "side).", wrap=True)


def _audit_text(it: PolicyResults, a: Attack) -> str:
    """The largest perturbation the attack actually applied (``attacks.results.*.audit``),
    in the norm of its threat model: evidence that the budget was respected."""
    if not a.audit:
        return "-"
    if a.kind == "action":
        v = _num(a.audit.get("act_linf_max"))
        return f"ℓ∞ {v:.4g} (action)" if v is not None else "-"
    norm = str(it.threat.get("norm", "linf"))
    v = _num(a.audit.get("obs_l2_max" if norm == "l2" else "obs_linf_max"))
    return f"{norm_label(norm)} {v:.4g}" if v is not None else "-"


_CONFIG_SKIP = {"name", "method", "space", "threat"}


def _attack_table(it: PolicyResults) -> Table:
    headers = ["attack", "mean [95% CI]", "IQM [95% CI]", "drop vs. clean [95% CI]", "n",
               "largest perturbation applied", "configuration"]
    rows = []
    for a in it.attack_list:
        s = a.summary or {}
        drop = fnum(a.drop_mean) + (f" {fci(a.drop_ci)}" if a.drop_ci else "")
        cfg = ", ".join(f"{k}={v}" for k, v in list(
            (k, v) for k, v in a.config.items() if k not in _CONFIG_SKIP)[:6]
            if not isinstance(v, (dict, list)))
        name = a.name + (" (action)" if a.kind == "action" else "")
        rows.append([name + (" (strongest)" if a is it.strongest else ""),
                     f"{fnum(s.get('mean'))} {fci(s.get('mean_ci'))}",
                     f"{fnum(s.get('iqm'))} {fci(s.get('iqm_ci'))}", drop,
                     str(s.get("n", a.returns.size if a.returns is not None else "-")),
                     _audit_text(it, a), cfg or "-"])
    eps = _num(it.threat.get("eps"))
    cap = ("Drop: mean over episodes of clean minus attacked return on the same episode seeds. "
           "Largest perturbation applied: the maximum per-step norm over all attacked steps "
           + (f"(must be ≤ ε = {eps:g})." if eps is not None else "(budget audit)."))
    return Table(headers, rows, cap, wrap_cols=(6,))


def _provenance(it: PolicyResults) -> list[Block]:
    d = it.data
    pol = it.policy
    rows: list[list[str]] = [
        ["results file", str(it.path.name)],
        ["schema version", str(d.get("schema_version", "?"))],
        ["created / updated", f"{d.get('created', '?')} / {d.get('updated', '?')}"],
    ]
    vers = d.get("versions") if isinstance(d.get("versions"), dict) else {}
    if vers:
        rows.append(["versions", ", ".join(f"{k} {v}" for k, v in vers.items())])
    for k in ("spec", "path", "sha256", "format", "algorithm"):
        if pol.get(k):
            rows.append([f"policy {k}", str(pol[k])])
    env = it.env
    if env:
        rows.append(["environment", f"{env.get('id')} kwargs={env.get('kwargs', {})}, horizon "
                     f"{env.get('horizon')}, step reward bounds {env.get('step_reward_bounds')} "
                     f"({env.get('bounds_kind')}), default ε {env.get('default_eps')}"])
    ev = d.get("evaluation") if isinstance(d.get("evaluation"), dict) else None
    if ev:
        rows.append(["evaluation", f"seed {ev.get('seed')}, {ev.get('episodes')} episodes, "
                     f"{'deterministic' if ev.get('deterministic') else 'stochastic'} actions"])
    c = it.cert
    if c:
        rows.append(["certificates", f"seed {c.get('seed')}, {c.get('episodes')} episodes, "
                     f"σ {c.get('sigma')}, α {c.get('alpha')}, band "
                     f"{(c.get('band') or {}).get('method', '?')}"])
    if it.attacks:
        rows.append(["attacks", it.threat_text() + f"; {len(it.attack_list)} attack(s)"])
    blocks: list[Block] = [Heading(f"{it.label} on {it.env_id}", 3,
                                   f"prov-{slug(it.label)}-{slug(it.env_id)}"),
                           Table(["field", "value"], rows, wrap=True)]
    cmds = [str(c) for c in d.get("commands") or []]
    if cmds:
        blocks.append(Para("Command lines that wrote this file (oldest first):", "small"))
        blocks.append(Code(cmds))
    return blocks


def _stress_summary(it: PolicyResults) -> Table | None:
    """Nominal model, worst case and average over the stress set, when the section stores
    them (``certrl stress``: worst case = lowest mean over the points, with the bootstrap CI of
    that minimum; its lower end is the gate metric ``worst_case_return``)."""
    g = it.stress_grid or {}
    rows = []

    def ci(d: dict) -> str:
        c = d.get("mean_ci")
        if c is None and d.get("lower") is not None:
            c = [d.get("lower"), d.get("upper")]
        return fci(c)

    nom = g.get("nominal_summary")
    if nom:
        rows.append(["nominal model", f"{fnum(nom.get('mean'))} {ci(nom)}", "-"])
    wc = g.get("worst_case")
    if wc:
        where = wc.get("values")
        where_s = (", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                             for k, v in where.items())
                   if isinstance(where, dict) else "-")
        rows.append(["worst point", f"{fnum(wc.get('mean'))} {ci(wc)}", where_s])
    avg = g.get("average")
    if avg:
        rows.append(["average over points", f"{fnum(avg.get('mean'))} {ci(avg)}", "-"])
    if not rows:
        return None
    return Table(["statistic", "mean return [95% CI]", "parameters"], rows,
                 "The worst point's interval is the bootstrap CI of the minimum over points "
                 "(the selection of the worst of several noisy means is accounted for); its "
                 "lower end is the gate metric `worst_case_return`.")


def _per_policy_section(
    B: list[Block], items: list[PolicyResults], multi: bool, attr: str, title: str,
    anchor: str, table: Callable[[PolicyResults], Table],
    figures: list[tuple[Callable[[PolicyResults, str], F.FigureSpec | None], str]],
) -> None:
    """A section of the policies whose results file holds section ``attr`` (``bounds``,
    ``diagnosis``): per policy its statement, its table and its figures."""
    having = [it for it in items if getattr(it, attr) is not None]
    if not having:
        return
    B.append(Heading(title, 2, anchor))
    for it in having:
        sid = f"{slug(it.label)}-{slug(it.env_id)}"
        if multi:
            B.append(Heading(f"{it.label} on {it.env_id}", 3, f"{anchor}-{sid}"))
        sec = getattr(it, attr) or {}
        if sec.get("statement"):
            B.append(Para(str(sec["statement"]), "statement"))
        B.append(table(it))
        for draw, suffix in figures:
            spec = draw(it, f"fig-{sid}-{suffix}")
            if spec is not None:
                B.append(Fig(spec))


def build_document(items: list[PolicyResults]) -> Document:
    multi = len(items) > 1
    date = report_date(items)
    names = ", ".join(f"{it.label} on {it.env_id}" for it in items)
    doc = Document(
        title="certrl robustness report",
        subtitle=(f"{names} · results updated {date} · certrl {__version__}"),
        date=date,
    )
    B = doc.blocks
    B.append(Heading("Verdict", 2, "verdict"))
    if multi:
        B.append(Cards([_verdict(it) for it in items]))
        h, rows, note = summary_table(items)
        B.append(Table(h, rows))
        if note:
            B.append(Para(note, "note"))
    else:
        B.append(_verdict(items[0]))

    # certificates
    B.append(Heading("Certified return", 2, "certificates"))
    for it in items:
        sid = f"{slug(it.label)}-{slug(it.env_id)}"
        if multi:
            B.append(Heading(f"{it.label} on {it.env_id}", 3, f"cert-{sid}"))
        if not it.budgets:
            B.append(Para(it.missing["certificates"] + ".", "missing"))
            continue
        if (it.cert or {}).get("statement"):
            B.append(Para(str(it.cert["statement"]), "statement"))
        B.append(Fig(F.certificate_figure(it, f"fig-{sid}-certificate")))
        B.append(_budget_table(it))
        B.extend(_cert_notes(it))
        sv = F.survival_figure(it, f"fig-{sid}-survival")
        if sv is not None:
            B.append(Fig(sv))
        sd = F.smoothed_distribution_figure(it, f"fig-{sid}-smoothed-quantiles")
        if sd is not None:
            B.append(Fig(sd))
        ps = F.per_state_figure(it, f"fig-{sid}-per-state")
        if ps is not None:
            B.append(Fig(ps))

    # per-step bounds of the deployed policy; where and along which directions it is fragile
    _per_policy_section(
        B, items, multi, "bounds", "Per-step bounds of the deployed policy", "bounds",
        _bounds_table, [(F.bounds_curve_figure, "bounds"),
                        (F.bounds_trace_figure, "bounds-trace")])
    _per_policy_section(
        B, items, multi, "diagnosis", "Where the policy is fragile", "diagnosis",
        _diagnosis_table, [(F.diagnosis_trace_figure, "diag-trace"),
                           (F.diagnosis_dimensions_figure, "diag-dims"),
                           (F.diagnosis_heatmap_figure, "diag-heat")])

    # attacks
    B.append(Heading("Attacks", 2, "attacks"))
    for it in items:
        sid = f"{slug(it.label)}-{slug(it.env_id)}"
        if multi:
            B.append(Heading(f"{it.label} on {it.env_id}", 3, f"attack-{sid}"))
        if not it.attack_list:
            B.append(Para(it.missing["attacks"] + ".", "missing"))
            continue
        B.append(Para(f"Threat model: {it.threat_text()}.", "small"))
        B.append(_attack_table(it))
        B.append(Fig(F.attack_figure(it, f"fig-{sid}-attacks")))

    # distributions
    B.append(Heading("Return distributions", 2, "distributions"))
    for it in items:
        sid = f"{slug(it.label)}-{slug(it.env_id)}"
        spec = F.distribution_figure(it, f"fig-{sid}-distributions")
        if multi:
            B.append(Heading(f"{it.label} on {it.env_id}", 3, f"dist-{sid}"))
        if spec is None:
            B.append(Para("no episode returns in this file: run "
                          f"`{it.command_hint('evaluate')}`.", "missing"))
            continue
        B.append(Fig(spec))
        if it.attacks is None:
            B.append(Para(it.missing["attacks"] + " to compare with attacked returns.",
                          "missing"))

    stress = [it for it in items if it.stress_grid is not None or "stress" in it.missing]
    if stress:
        B.append(Heading("Dynamics stress test", 2, "stress"))
        for it in stress:
            sid = f"{slug(it.label)}-{slug(it.env_id)}"
            if multi:
                B.append(Heading(f"{it.label} on {it.env_id}", 3, f"stress-{sid}"))
            spec = F.stress_figure(it, f"fig-{sid}-stress")
            if spec is None:
                B.append(Para(it.missing.get("stress", "the stress grid has no finite mean "
                                             "returns") + ".", "missing"))
                continue
            B.append(Fig(spec))
            summ = _stress_summary(it)
            if summ is not None:
                B.append(summ)

    if multi:
        B.append(Heading("Comparison across policies", 2, "comparison"))
        comp: Comparison | None = compare(items)
        if comp is None:
            B.append(Para("Fewer than two files have clean evaluation returns: run "
                          "`certrl evaluate` for each policy to compare them.", "missing"))
        else:
            B.append(Para(comp.note, "small"))
            B.append(Para("Warning: " + single_run_warning(comp.labels) + " with `certrl "
                          "compare`.", "note"))
            B.append(Fig(F.intervals_figure(comp, "fig-comparison-intervals")))
            B.append(Fig(F.profiles_figure(comp, "fig-comparison-profiles")))
            B.append(Fig(F.poi_figure(comp, "fig-comparison-poi")))
            h, rows = poi_table(comp.poi)
            B.append(Table(h, rows, "Probability of improvement on clean evaluation returns "
                           f"({comp.score_label})."))

    B.append(Heading("Provenance", 2, "provenance"))
    for it in items:
        B.extend(_provenance(it))
    B.append(Heading("Glossary: threat models and statistics", 2, "glossary"))
    B.append(Table(["term", "meaning"], [[k, v] for k, v in GLOSSARY], wrap=True))
    return doc
