#!/usr/bin/env bash
# The standard benchmark matrix (`make bench`): for each program and each point (mock delay,
# users), every mode is measured one after the other against the same mock LLM, so dspy-cli's row
# sits beside ours from the same run. Then results/summary.md tabulates every *_server.json, and
# the ratios of each point (CPU per request vs dspy-cli and the bare proxy, req/s vs dspy-cli,
# share of the latency bound).
#
# Variables (defaults in brackets):
#   PROGRAMS     programs to measure                  [SimplePredict AsyncPredict]
#   MODES        run_benchmark.sh modes, space-separated
#                [single dspy-cli-layout production dspy-cli bare-proxy]
#   POINTS       DELAY_MS:USERS pairs                 [50:50 0:50 50:10 50:100 50:200 50:400 500:200]
#   DURATION     locust run time per point and mode   [30s]
#   WORKERS      gunicorn workers in production mode  [2]
#   RESULTS_DIR  where the CSV, HTML and JSON go      [loadtest/results]
# Every other run_benchmark.sh variable (SPAWN_RATE, DSPY_CLI_VERSION, ...) is passed through.
#
# Exit status: 0 when every point passed (failures <= 1%, mock check), else 1 after running all of
# them; the failed points are listed (errors at the highest loads are a finding, not a kit bug).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VENV="${VENV:-$(cd "$HERE/.." && pwd)/.venv}"
PROGRAMS="${PROGRAMS:-SimplePredict AsyncPredict}"
MODES="${MODES:-single dspy-cli-layout production dspy-cli bare-proxy}"
POINTS="${POINTS:-50:50 0:50 50:10 50:100 50:200 50:400 500:200}"
export DURATION="${DURATION:-30s}"
export WORKERS="${WORKERS:-2}"
export RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"

read -r -a program_list <<<"$PROGRAMS"
read -r -a mode_list <<<"$MODES"
read -r -a point_list <<<"$POINTS"
modes_csv="$(IFS=,; echo "${mode_list[*]}")"
runs=$((${#program_list[@]} * ${#point_list[@]} * ${#mode_list[@]}))
echo "run_matrix: $runs runs of $DURATION (+ start-up) into $RESULTS_DIR"

failed=()
for program in "${program_list[@]}"; do
    for point in "${point_list[@]}"; do
        delay="${point%%:*}"
        users="${point##*:}"
        [[ "$delay" =~ ^[0-9]+$ && "$users" =~ ^[0-9]+$ ]] || { echo "run_matrix: bad point $point" >&2; exit 2; }
        echo "run_matrix: == $program, mock delay $delay ms, $users users, modes $modes_csv"
        if ! MOCK_DELAY_MS="$delay" "$HERE/run_benchmark.sh" \
            --mode "$modes_csv" --program "$program" --users "$users" --delay-ms "$delay"; then
            failed+=("$program d$delay u$users")
        fi
    done
done

{
    "$VENV/bin/python" "$HERE/summarize.py" table "$RESULTS_DIR"
    printf '\n'
    "$VENV/bin/python" "$HERE/summarize.py" ratios "$RESULTS_DIR"
} | tee "$RESULTS_DIR/summary.md"
if ((${#failed[@]})); then
    printf 'run_matrix: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "run_matrix: all $runs runs passed"
