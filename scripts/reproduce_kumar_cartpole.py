"""Reproduce the CartPole setting of Kumar, Levine & Feizi (ICLR 2022) with certrl.

Protocol of the paper's reference code (see ``docs/kumar_reference.md``): CartPole-v0 (200 steps,
returns 0..200), raw 4-d observations, smoothing noise sigma = 0.2 on the raw observation, an
agent trained with that noise, m = 10,000 smoothed episodes, alpha = 0.05, episode l2 budgets B
from 0 to 1.0.

Runs ``certrl certify demo:cartpole-noisy --env cartpole-v0 --space raw`` (which also runs the
episode-budget attack on the smoothed policy) and then computes, on the *same* 10,000 smoothed
returns, three expected-return certificates side by side:

* ``reference (CP)``: the reference code's CartPole route, a fixed threshold grid 1..200 with
  one-sided Clopper-Pearson bounds at alpha/200 (Bonferroni), lower bound a = 0
  (:func:`certrl.certificates.expected_return_certificate_cp`). At B = 0 the reference code plots
  the raw empirical mean (an estimate, not a bound); we print both.
* ``reference (DKW two-sided)``: the reference code's route for its other environments,
  ``ln(2/alpha)`` band, a = 0 (``one_sided=False``).
* ``certrl DKW``: certrl's general-purpose band, one-sided DKW/Massart ``ln(1/alpha)``, with the
  environment's return lower bound a = 1 (every episode lasts at least one step).
* ``certrl hybrid``: certrl's default band off a lattice (DKW in the middle, exact
  order-statistic bounds in the tails, union bound), a = 1.
* ``certrl certify``: what ``certrl certify`` reports (``--band auto``: on CartPole the returns
  lie on the lattice 1..200, so it uses the Clopper-Pearson grid 2..200 with a = 1).

Writes ``<out>/kumar_cartpole.json`` and a Markdown table ``<out>/kumar_cartpole.md`` and prints
the table. Usage::

    .venv/bin/python scripts/reproduce_kumar_cartpole.py                    # ~5 minutes on 2 cores
    .venv/bin/python scripts/reproduce_kumar_cartpole.py --episodes 1000    # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certrl.certificates import (  # noqa: E402
    expected_return_certificate,
    expected_return_certificate_cp,
)
from certrl.cli import main as certrl_main  # noqa: E402
from certrl.results import atomic_write_json  # noqa: E402

BUDGETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="demo:cartpole-noisy")
    ap.add_argument("--sigma", type=float, default=0.2)
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--attack-episodes", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/kumar")
    ap.add_argument("--no-attack", action="store_true")
    args = ap.parse_args(argv)

    out = Path(args.out)
    budgets = ",".join(f"{b:g}" for b in BUDGETS)
    cmd = [
        "certify", args.policy, "--env", "cartpole-v0", "--sigma", str(args.sigma),
        "--space", "raw", "--budgets", budgets, "--episodes", str(args.episodes),
        "--alpha", str(args.alpha), "--seed", str(args.seed), "--out", str(out),
        "--attack-episodes", str(args.attack_episodes),
    ]
    if args.no_attack:
        cmd.append("--no-attack")
    print("certrl " + " ".join(cmd), flush=True)
    rc = certrl_main(cmd)
    if rc != 0:
        return rc

    files = sorted(out.glob("CartPole-v0_*.json"))
    if not files:
        print(f"no results file in {out}", file=sys.stderr)
        return 3
    data = json.loads(files[-1].read_text())
    cert = data["certificates"]
    r = np.asarray(cert["smoothed_returns"], dtype=float)
    b = np.asarray(BUDGETS)
    ref_cp = expected_return_certificate_cp(r, args.sigma, b, args.alpha, 0.0,
                                            np.arange(1, 201))
    ref_dkw2 = expected_return_certificate(r, args.sigma, b, args.alpha, 0.0, one_sided=False)
    a = float(cert["reward_lower_bound"])
    ours_dkw = expected_return_certificate(r, args.sigma, b, args.alpha, a)
    ours_hybrid = expected_return_certificate(r, args.sigma, b, args.alpha, a, band="hybrid")
    ours = {row["budget"]: row for row in cert["budgets"]}
    rows = []
    for i, bb in enumerate(BUDGETS):
        row = ours[bb]
        att = row.get("attack") or {}
        rows.append({
            "budget": bb,
            "reference_cp": float(ref_cp[i]),
            "reference_dkw_two_sided": float(ref_dkw2[i]),
            "certrl_dkw": float(ours_dkw[i]),
            "certrl_hybrid": float(ours_hybrid[i]),
            "certrl": float(row["expected_return_lower_bound"]),
            "attacked_mean": att.get("mean"),
        })
    summary = {
        "protocol": {
            "env": "CartPole-v0", "policy": args.policy, "sigma": args.sigma, "space": "raw",
            "episodes": int(r.size), "alpha": args.alpha, "seed": args.seed,
            "reward_lower_bound_certrl": cert["reward_lower_bound"],
        },
        "smoothed_mean": float(r.mean()),
        "certrl_band": cert["band"],
        "rows": rows,
        "results_file": str(files[-1]),
    }
    atomic_write_json(out / "kumar_cartpole.json", summary)
    lines = [
        f"CartPole-v0, sigma = {args.sigma:g} (raw observation), m = {r.size} smoothed episodes "
        f"(mean {r.mean():.2f}), alpha = {args.alpha:g}",
        "",
        "| B | reference CP grid (a=0) | reference DKW two-sided (a=0) | certrl DKW one-sided "
        "(a=1) | certrl hybrid band (a=1) | certrl certify (auto: CP grid, a=1) | attacked "
        "smoothed return (mean) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        att = "-" if row["attacked_mean"] is None else f"{row['attacked_mean']:.1f}"
        lines.append(f"| {row['budget']:g} | {row['reference_cp']:.1f} | "
                     f"{row['reference_dkw_two_sided']:.1f} | {row['certrl_dkw']:.1f} | "
                     f"{row['certrl_hybrid']:.1f} | {row['certrl']:.1f} | {att} |")
    table = "\n".join(lines)
    (out / "kumar_cartpole.md").write_text(table + "\n")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
