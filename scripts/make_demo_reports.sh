#!/usr/bin/env bash
# Regenerate reports/ from the bundled demo policies (`make reports` runs this).
#
#   1. certrl evaluate / certify / attack on demo:hopper and demo:cartpole, modest episode
#      counts, into $RESULTS (default results/demo);
#   2. certrl report: one report per policy and one comparing both, HTML and PDF, in reports/.
#
# Environment: BIN (default .venv/bin), RESULTS, EPISODES (certify episodes, default 200),
# WORKERS (default: all cores). Same results files -> byte-identical reports.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RESULTS=${RESULTS:-results/demo}
EPISODES=${EPISODES:-200}
WORKERS_ARG=()
if [[ -n "${WORKERS:-}" ]]; then WORKERS_ARG=(--workers "$WORKERS"); fi
export MPLBACKEND=Agg
mkdir -p "$RESULTS" reports

run() { echo "+ $*" >&2; "$@"; }

# policy  env       attack eps (l_inf, normalized obs; empty: the environment's default)
for spec in "hopper hopper" "cartpole cartpole 0.1"; do
    read -r policy env eps <<<"$spec"
    run "$BIN/certrl" evaluate "demo:$policy" --env "$env" --episodes 100 --out "$RESULTS" \
        --no-progress "${WORKERS_ARG[@]}"
    run "$BIN/certrl" certify "demo:$policy" --env "$env" --sigma 0.2 \
        --budgets 0,0.05,0.1,0.2,0.4 --episodes "$EPISODES" --attack-episodes 20 \
        --out "$RESULTS" --no-progress "${WORKERS_ARG[@]}"
    if "$BIN/certrl" attack --help >/dev/null 2>&1; then
        run "$BIN/certrl" attack "demo:$policy" --env "$env" --attack all --episodes 30 \
            ${eps:+--eps "$eps"} --out "$RESULTS" --no-progress "${WORKERS_ARG[@]}"
    else
        echo "note: this certrl has no 'attack' command; the reports will say so" >&2
    fi
done

hopper="$RESULTS/Hopper-v5_hopper.json"
cartpole="$RESULTS/CartPole-v1_cartpole.json"
run "$BIN/certrl" report "$hopper" -o reports/hopper.html -o reports/hopper.pdf
run "$BIN/certrl" report "$cartpole" -o reports/cartpole.html -o reports/cartpole.pdf
run "$BIN/certrl" report "$hopper" "$cartpole" -o reports/demo.html -o reports/demo.pdf
"$BIN/certrl" compare "$hopper" "$cartpole"
