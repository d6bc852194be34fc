#!/usr/bin/env bash
# Regenerate reports/ from the bundled demo policies (`make reports` runs this).
#
#   1. for each demo policy: certrl evaluate, certify (with an attack on the smoothed policy at
#      every budget), bound (per-step IBP/CROWN certificates at the attack budget), attack
#      (observation attacks at the environment's published budget), diagnose (sensitivity and
#      fragile directions; the Hoppers compared with each other) and, on MuJoCo, stress (a
#      2-parameter dynamics grid), into $RESULTS (default results/demo);
#   2. certrl report: one report per policy and one comparing the Hopper policies, HTML and
#      PDF, in $OUT (default reports/); certrl compare prints the comparison table.
#
# Environment (defaults in brackets; the small values make a quick smoke run):
#   BIN [.venv/bin]  RESULTS [results/demo]  OUT [reports]
#   POLICIES ["hopper-smooth:hopper::0.1 hopper:hopper hopper-noisy:hopper
#             cartpole-noisy:cartpole-v0:0.1 pong:pong-one-round::0.1"]
#            (demo name:env alias[:attack eps[:sigma]]; without eps the environment's published
#            budget; sigma of the certificate, default 0.2)
#   BOUND_EPISODES [50]  DIAGNOSE_EPISODES [10]
#   EVAL_EPISODES [100]  CERT_EPISODES [1000]  CERT_ATTACK_EPISODES [20]
#   ATTACKS [random,gaussian,fgsm,pgd,mad,critic,rs]  ATTACK_EPISODES [50]
#   PIXEL_ATTACKS [random,fgsm,pgd,mad] (Atari: no learned critics on pixels)
#   PIXEL_CERT_EPISODES [1000]  PIXEL_CERT_ATTACK_EPISODES [10] (the per-frame attack runs at
#            ~20 steps/s on 2 cores). Pixel policies get no bound / diagnose (refused: no
#            convolution bounds yet).
#   STRESS_PARAMS [torso_mass=0.5:1.5,friction=0.5:1.5]  STRESS_GRID [5]  STRESS_EPISODES [10]
#   WORKERS [all cores]
# Same results files -> byte-identical reports. Runs are resumable: rerun with the same
# settings after an interruption (each command gets --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RESULTS=${RESULTS:-results/demo}
OUT=${OUT:-reports}
POLICIES=${POLICIES:-"hopper-smooth:hopper::0.1 hopper:hopper hopper-noisy:hopper cartpole-noisy:cartpole-v0:0.1 pong:pong-one-round::0.1"}
PIXEL_ATTACKS=${PIXEL_ATTACKS:-random,fgsm,pgd,mad}
PIXEL_CERT_EPISODES=${PIXEL_CERT_EPISODES:-1000}
PIXEL_CERT_ATTACK_EPISODES=${PIXEL_CERT_ATTACK_EPISODES:-10}
BOUND_EPISODES=${BOUND_EPISODES:-50}
DIAGNOSE_EPISODES=${DIAGNOSE_EPISODES:-10}
EVAL_EPISODES=${EVAL_EPISODES:-100}
CERT_EPISODES=${CERT_EPISODES:-1000}
CERT_ATTACK_EPISODES=${CERT_ATTACK_EPISODES:-20}
ATTACKS=${ATTACKS:-random,gaussian,fgsm,pgd,mad,critic,rs}
ATTACK_EPISODES=${ATTACK_EPISODES:-50}
STRESS_PARAMS=${STRESS_PARAMS:-torso_mass=0.5:1.5,friction=0.5:1.5}
STRESS_GRID=${STRESS_GRID:-5}
STRESS_EPISODES=${STRESS_EPISODES:-10}
COMMON=(--out "$RESULTS" --no-progress --resume)
if [[ -n "${WORKERS:-}" ]]; then COMMON+=(--workers "$WORKERS"); fi
export MPLBACKEND=Agg
mkdir -p "$RESULTS" "$OUT"

run() { echo "+ $*" >&2; "$@"; }
have() { "$BIN/certrl" "$1" --help >/dev/null 2>&1; }

files=()
hopper_files=()
for item in $POLICIES; do
    IFS=: read -r policy env eps sigma <<<"$item"
    sigma=${sigma:-0.2}
    # the same B / sigma for every policy: 0, 0.25, 0.5, 1, 2 (B = 0,0.05,0.1,0.2,0.4 at 0.2)
    budgets=$("$BIN/python" -c "print(','.join(f'{f * $sigma:g}' for f in (0, .25, .5, 1, 2)))")
    # the environment's registry id (the results file's name) and whether it shows pixels
    read -r id pixels < <("$BIN/certrl" envs --json | "$BIN/python" -c \
        "import json,sys; r=next(r for r in json.load(sys.stdin) if r['alias']=='$env'); \
print(r['id'], 1 if r.get('frame_stack') else 0)")
    attacks=$ATTACKS cert_episodes=$CERT_EPISODES cert_attack=$CERT_ATTACK_EPISODES
    if (( pixels )); then
        attacks=$PIXEL_ATTACKS cert_episodes=$PIXEL_CERT_EPISODES
        cert_attack=$PIXEL_CERT_ATTACK_EPISODES
    fi
    run "$BIN/certrl" evaluate "demo:$policy" --env "$env" --episodes "$EVAL_EPISODES" \
        "${COMMON[@]}"
    run "$BIN/certrl" certify "demo:$policy" --env "$env" --sigma "$sigma" \
        --budgets "$budgets" --episodes "$cert_episodes" \
        --attack-episodes "$cert_attack" "${COMMON[@]}"
    if (( ! pixels )) && have bound; then
        run "$BIN/certrl" bound "demo:$policy" --env "$env" ${eps:+--eps "$eps"} \
            --episodes "$BOUND_EPISODES" "${COMMON[@]}"
    fi
    if (( ! pixels )) && have diagnose; then  # where it is fragile; the Hoppers compared with each other
        cmp=()
        if [[ "$env" == hopper ]]; then
            if [[ "$policy" == hopper-smooth ]]; then cmp=(--compare demo:hopper)
            else cmp=(--compare demo:hopper-smooth); fi
        fi
        run "$BIN/certrl" diagnose "demo:$policy" --env "$env" --episodes "$DIAGNOSE_EPISODES" \
            "${cmp[@]}" "${COMMON[@]}"
    fi
    if have attack; then
        run "$BIN/certrl" attack "demo:$policy" --env "$env" --attack "$attacks" \
            ${eps:+--eps "$eps"} --episodes "$ATTACK_EPISODES" "${COMMON[@]}"
    else
        echo "note: this certrl has no 'attack' command; the reports will say so" >&2
    fi
    if [[ "$env" == hopper ]] && have stress; then
        run "$BIN/certrl" stress "demo:$policy" --env "$env" --params "$STRESS_PARAMS" \
            --grid "$STRESS_GRID" --episodes "$STRESS_EPISODES" "${COMMON[@]}"
    fi
    f="$RESULTS/$(tr -c 'A-Za-z0-9._\n-' '-' <<<"${id}_${policy}").json"
    run "$BIN/certrl" report "$f" -o "$OUT/$policy.html" -o "$OUT/$policy.pdf"
    files+=("$f")
    if [[ "$env" == hopper ]]; then hopper_files+=("$f"); fi
done

if (( ${#hopper_files[@]} >= 2 )); then
    run "$BIN/certrl" report "${hopper_files[@]}" -o "$OUT/hopper-comparison.html" \
        -o "$OUT/hopper-comparison.pdf"
    run "$BIN/certrl" compare "${hopper_files[@]}"
fi
echo "reports: $(ls "$OUT"/*.html "$OUT"/*.pdf | tr '\n' ' ')" >&2
