"""Reproduce the Atari settings of Kumar, Levine & Feizi (ICLR 2022) with certrl: one-round
Pong and Freeway (250 steps), smoothing sigma 0.05 and 0.1 on [0, 1] pixels, episode l2 budgets
B in [0, 0.4] summed over frames, m = 10,000 smoothed episodes, alpha = 0.05.

Protocol of the paper's reference code (``docs/kumar_reference.md``; Freeway from ReCePS, a
derivative of it, Pong from CAMP's port): the noise is added to each preprocessed 84 x 84 frame
*before* the 4-frame stack (certrl: ``--smoothing-unit frame``, the default on these
environments), the agent is trained with that noise, and the certificates are

* Pong (one round): the win probability lowered by a one-sided Clopper-Pearson bound at alpha,
  then shifted, ``Phi(Phi^-1(p_lower) - B / sigma)``: certrl's ``cp-grid`` band on the one
  threshold of the {0, 1} return (what ``certify --band auto`` picks);
* Freeway: the score's survival function lowered by a two-sided DKW band (``ln(2 / alpha)``),
  each level shifted and summed (``dkw_cohen`` + ``compute_one_minus_cdf_function``), with
  lower bound a = 0; certrl's default there is its hybrid band (one-sided DKW in the middle,
  exact order statistics in the tails).

For each (game, sigma) the script runs ``certrl.certify`` (the API of ``certrl certify``) on the
demo agents and recomputes the reference code's certificate on the *same* smoothed returns with
an independent implementation (scipy / statsmodels), printing both side by side. The paper
reports these curves as figures only (Fig. 3 of arXiv 2106.11420); their values are not in any
machine-readable source available to this project, so the table has no "paper" column: compare
the *method* here (identical numbers from the same returns) and the *setting* (sigma, B, m,
alpha), and our agents' clean scores with the figure by eye. Our agents are not the paper's
(they are imitation-trained on 2 CPU cores: ``scripts/train_atari_demo.py``).

Writes ``<out>/kumar_atari.json`` and ``<out>/kumar_atari.md``. Usage::

    .venv/bin/python scripts/reproduce_kumar_atari.py                   # the paper's m = 10,000
    .venv/bin/python scripts/reproduce_kumar_atari.py --episodes 1000   # quick look (~10 min)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certrl.results import atomic_write_json  # noqa: E402

GAMES = {"pong-one-round": "demo:pong", "freeway-250": "demo:freeway"}
SIGMAS = (0.05, 0.1)
BUDGETS = (0.0, 0.1, 0.2, 0.3, 0.4)


def reference_pong(returns: np.ndarray, sigma: float, budgets, alpha: float) -> list[float]:
    """CAMP ``pong_certify`` / Kumar: CP lower bound on P(win), then the Gaussian shift."""
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    wins = int(np.sum(returns >= 1.0))
    p = proportion_confint(wins, returns.size, alpha=2 * alpha, method="beta")[0]
    return [float(norm.cdf(norm.ppf(p) - b / sigma)) if p > 0 else 0.0 for b in budgets]


def reference_freeway(returns: np.ndarray, sigma: float, budgets, alpha: float) -> list[float]:
    """ReCePS ``compute_one_minus_cdf_function`` with ``dkw_cohen`` (two-sided DKW, a = 0)."""
    from scipy.stats import norm

    v = np.sort(returns)
    n = v.size
    eps = math.sqrt(math.log(2 / alpha) / (2 * n))
    out = []
    for b in budgets:
        total, last = 0.0, 0.0
        for i, x in enumerate(v):
            if x == last:
                continue
            p = max((n - i) / n - eps, 0.0)
            total += (float(norm.cdf(norm.ppf(p) - b / sigma)) if p > 0 else 0.0) * (x - last)
            last = x
        out.append(total)
    return out


def main(argv: list[str] | None = None) -> int:
    import certrl

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--games", default=",".join(GAMES))
    ap.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS))
    ap.add_argument("--out", default="results/kumar")
    args = ap.parse_args(argv)
    out = Path(args.out)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    report = {"protocol": {"episodes": args.episodes, "alpha": args.alpha, "seed": args.seed,
                           "budgets": list(BUDGETS), "smoothing": "per frame, [0, 1] pixels"},
              "runs": []}
    lines = []
    for game in args.games.split(","):
        for sigma in sigmas:
            print(f"certrl.certify({GAMES[game]!r}, {game!r}, sigma={sigma:g}, "
                  f"episodes={args.episodes})", flush=True)
            res = certrl.certify(GAMES[game], game, sigma=sigma, budgets=BUDGETS,
                                 alpha=args.alpha, episodes=args.episodes, seed=args.seed,
                                 clean_episodes=min(args.episodes, 500), attack=False,
                                 workers=args.workers, out=out, progress=False)
            sec = res.to_json()
            r = np.asarray(sec["smoothed_returns"], dtype=float)
            ref = (reference_pong if game.startswith("pong") else reference_freeway)(
                r, sigma, BUDGETS, args.alpha)
            rows = [{"budget": row["budget"], "certrl": row["expected_return_lower_bound"],
                     "reference_method": ref_v}
                    for row, ref_v in zip(sec["budgets"], ref, strict=True)]
            clean = sec["clean_unsmoothed"]["summary"]["mean"]
            report["runs"].append({
                "game": game, "policy": GAMES[game], "sigma": sigma, "episodes": int(r.size),
                "clean_mean": clean, "smoothed_mean": float(r.mean()),
                "band": sec["band"]["method"], "rows": rows,
                "results_file": str(res.results_file) if res.results_file else None,
            })
            lines.append(f"**{game}**, sigma = {sigma:g}: clean score {clean:.3f}, smoothed "
                         f"{r.mean():.3f} over m = {r.size} (certrl band: {sec['band']['method']})")
            lines.append("")
            lines.append("| B | certrl certify | reference code's certificate, same returns |")
            lines.append("|---:|---:|---:|")
            for row in rows:
                lines.append(f"| {row['budget']:g} | {row['certrl']:.3f} | "
                             f"{row['reference_method']:.3f} |")
            lines.append("")
    atomic_write_json(out / "kumar_atari.json", report)
    table = "\n".join(lines)
    (out / "kumar_atari.md").write_text(table + "\n")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
