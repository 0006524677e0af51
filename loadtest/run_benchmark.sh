#!/usr/bin/env bash
# One load-test point: boot the mock LLM and the server(s) under test on loopback, run locust
# headless for a bounded time, write results/<LABEL>_stats.csv, <LABEL>.html and
# <LABEL>_server.json (CPU, RSS, the mock's counters), check that the mock served exactly one
# completion per LM call of every successful request (no hidden cache), and stop only the
# processes this script started, by PID.
#
# Usage: loadtest/run_benchmark.sh [options]      (every option also reads the variable shown)
#   --mode M[,M...]   MODES       single | production | dspy-cli | dspy-cli-layout | bare-proxy,
#                                 comma-separated (single)
#                                 single:     this service under uvicorn, one process
#                                 production: gunicorn -c dspysite/gunicorn.conf.py, WORKERS
#                                             uvicorn workers
#                                 dspy-cli:   the same fixture under `dspy-cli serve --no-reload`,
#                                             from its own virtualenv (created on first use)
#                                 dspy-cli-layout: this service as single, serving the fixture as
#                                             a dspy-cli project has it: the copy dspy-cli serves,
#                                             its own config, no declared_models section
#                                 bare-proxy: the ceiling: loadtest/bare_proxy.py under uvicorn,
#                                             one pooled HTTP call to the mock per request, no DSPy
#   --program P       PROGRAM     SimplePredict | AsyncPredict | MultiStep (SimplePredict)
#   --users N         USERS       concurrent users, each sending back to back (50)
#   --spawn-rate R    SPAWN_RATE  users started per second (= USERS: all within a second)
#   --duration T      DURATION    locust run time, e.g. 30s, 2m (30s)
#   --delay-ms MS     MOCK_DELAY_MS  the mock LLM's answer delay (50)
#   --workers N       WORKERS     gunicorn workers in production mode (2)
#   --label L         LABEL       result file prefix (<server>_<program>_u<users>_d<delay>);
#                                 with several modes, <L>_<server>
#   --results-dir D   RESULTS_DIR where results go (loadtest/results)
# Other variables: DSPY_CLI_VERSION (0.1.13), DSPY_CLI_VENV (loadtest/.dspy-cli-venv),
# DSPY_CLI_SYNC_WORKERS (dspy-cli's --sync-workers; its default when unset), WARMUP_REQUESTS (5),
# READY_TIMEOUT_S (90), STOP_TIMEOUT_S (60: in-flight requests finish after the run time),
# KEEP_WORK=1 (keep the temporary directory with the logs), PYTHON (python3, for the dspy-cli
# venv), VENV (.venv).
#
# Exit status: 0 when every mode passed; 1 when locust's failure ratio passed 1%, the mock check
# failed or a server did not start; 2 on a usage error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
FIXTURE="$HERE/fixture_project"

MODES="${MODES:-${MODE:-single}}"
PROGRAM="${PROGRAM:-SimplePredict}"
USERS="${USERS:-50}"
SPAWN_RATE="${SPAWN_RATE:-}"
DURATION="${DURATION:-30s}"
MOCK_DELAY_MS="${MOCK_DELAY_MS:-50}"
WORKERS="${WORKERS:-2}"
LABEL="${LABEL:-}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
VENV="${VENV:-$ROOT/.venv}"
DSPY_CLI_VERSION="${DSPY_CLI_VERSION:-0.1.13}"
DSPY_CLI_VENV="${DSPY_CLI_VENV:-$HERE/.dspy-cli-venv}"
DSPY_CLI_SYNC_WORKERS="${DSPY_CLI_SYNC_WORKERS:-}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-5}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-90}"
STOP_TIMEOUT_S="${STOP_TIMEOUT_S:-60}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run_benchmark: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --mode) MODES="$2"; shift 2 ;;
        --program) PROGRAM="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --spawn-rate) SPAWN_RATE="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --delay-ms) MOCK_DELAY_MS="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --label) LABEL="$2"; shift 2 ;;
        --results-dir) RESULTS_DIR="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_benchmark: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

SPAWN_RATE="${SPAWN_RATE:-$USERS}"
IFS=',' read -r -a MODE_LIST <<<"$MODES"
for mode in "${MODE_LIST[@]}"; do
    case "$mode" in single|production|dspy-cli|dspy-cli-layout|bare-proxy) ;; *) echo "run_benchmark: unknown mode $mode" >&2; exit 2 ;; esac
done
case "$PROGRAM" in
    SimplePredict|AsyncPredict) CALLS_PER_REQUEST=1 ;;
    MultiStep) CALLS_PER_REQUEST=2 ;;
    *) echo "run_benchmark: unknown program $PROGRAM" >&2; exit 2 ;;
esac
PY="$VENV/bin/python"
[[ -x "$PY" ]] || die "$PY not found: run \`make install\` first"
mkdir -p "$RESULTS_DIR"
RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)"

# ---------------------------------------------------------------------------------------------
# Processes: every one we start is recorded and stopped by its PID, nothing else is touched.
# ---------------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-XXXXXX")"
STARTED_PIDS=()

stop_pid() {  # TERM, then KILL after $2 seconds (default 20)
    local pid="$1" grace="${2:-20}" deadline
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "run_benchmark: PID $pid did not stop within ${grace}s, killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local pid="$1" kept=() p
    for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]+"${kept[@]}"}")
}

# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    local status=$? i
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED_PIDS[i]}" 10; done
    if [[ "${KEEP_WORK:-}" == 1 || $status -ne 0 ]]; then
        echo "run_benchmark: logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll URL until it answers 2xx, while PID is alive, for at most READY_TIMEOUT_S seconds.
wait_ready() {
    local url="$1" pid="$2" log="$3" deadline=$((SECONDS + READY_TIMEOUT_S))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$log" >&2 || true
            die "PID $pid exited before $url was ready (log above)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$log" >&2 || true
            die "$url not ready within ${READY_TIMEOUT_S}s (log above)"
        fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------------
# The mock LLM, shared by the modes of this run (its counters are reset before each run).
# ---------------------------------------------------------------------------------------------
start_mock() {
    MOCK_DELAY_MS="$MOCK_DELAY_MS" "$PY" "$HERE/mock_llm.py" --host 127.0.0.1 --port 0 \
        >"$WORK/mock.out" 2>"$WORK/mock.err" &
    MOCK_PID=$!
    STARTED_PIDS+=("$MOCK_PID")
    local deadline=$((SECONDS + READY_TIMEOUT_S)) banner=""
    until banner="$(grep -m1 '^mock LLM listening on ' "$WORK/mock.out" 2>/dev/null)"; do
        kill -0 "$MOCK_PID" 2>/dev/null || { cat "$WORK/mock.err" >&2; die "the mock LLM exited"; }
        ((SECONDS < deadline)) || die "the mock LLM did not start within ${READY_TIMEOUT_S}s"
        sleep 0.05
    done
    MOCK_URL="$(sed -E 's#^mock LLM listening on (http://[^ ]+)/v1 .*#\1#' <<<"$banner")"
    echo "run_benchmark: $banner"
}

# The fixture's config with api_base pointing at this run's mock, twice. $WORK/fixture.config.yaml
# is the fixture's own (its declared_models section included): modes single and production serve
# loadtest/fixture_project with DSPY_CONFIG set to it. $PROJECT is a copy of the fixture as a
# dspy-cli project has it (no declared_models): dspy-cli reads the config of its working directory
# (and writes logs/ and openapi.json there), and mode dspy-cli-layout serves the same copy.
prepare_project() {
    PROJECT="$WORK/fixture_project"
    mkdir -p "$PROJECT"
    cp -R "$FIXTURE/src" "$PROJECT/src"
    find "$PROJECT" -name __pycache__ -type d -prune -exec rm -rf {} +
    "$PY" - "$FIXTURE/dspy.config.yaml" "$WORK/fixture.config.yaml" "$PROJECT/dspy.config.yaml" \
        "$MOCK_URL/v1" <<'PYTHON'
import sys

import yaml

source, fixture_copy, dspy_cli_copy, api_base = sys.argv[1:]
config = yaml.safe_load(open(source))
for entry in config["models"]["registry"].values():
    entry["api_base"] = api_base
with open(fixture_copy, "w") as handle:
    yaml.safe_dump(config, handle, sort_keys=False)
config.pop("declared_models", None)
with open(dspy_cli_copy, "w") as handle:
    yaml.safe_dump(config, handle, sort_keys=False)
PYTHON
}

ensure_dspy_cli() {
    local dspy_version
    dspy_version="$(sed -n 's/^dspy==//p' "$ROOT/requirements.txt")"
    if "$DSPY_CLI_VENV/bin/python" - "$DSPY_CLI_VERSION" "$dspy_version" 2>/dev/null <<'PYTHON'; then
import importlib.metadata as metadata
import sys

wanted = {"dspy-cli": sys.argv[1], "dspy": sys.argv[2]}
sys.exit(any(metadata.version(name) != version for name, version in wanted.items() if version))
PYTHON
        return 0
    fi
    echo "run_benchmark: installing dspy-cli==$DSPY_CLI_VERSION (dspy==$dspy_version) into $DSPY_CLI_VENV"
    "${PYTHON:-python3}" -m venv "$DSPY_CLI_VENV"
    "$DSPY_CLI_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "dspy-cli==$DSPY_CLI_VERSION" ${dspy_version:+"dspy==$dspy_version"}
}

# A production server refuses to start without a strong SECRET_KEY and has API keys on with DEBUG
# off (docs/DEPLOYMENT.md): this run's own random key, and the API open as the benchmarks call it.
BENCH_SECRET_KEY="bench-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
# This service's environment: the fixture project, this run's config and a throw-away database.
OUR_ENV=(
    SECRET_KEY="$BENCH_SECRET_KEY"
    DSPY_AUTH=false
    DJANGO_SETTINGS_MODULE=dspysite.settings
    DSPY_PROJECT_DIR="$FIXTURE"
    DSPY_CONFIG="$WORK/fixture.config.yaml"
    DATABASE_URL="sqlite:///$WORK/db.sqlite3"
)
# Mode dspy-cli-layout: the dspy-cli copy, found as a user's project is (DSPY_PROJECT_DIR alone).
LAYOUT_ENV=(
    -u DSPY_CONFIG
    SECRET_KEY="$BENCH_SECRET_KEY"
    DSPY_AUTH=false
    DJANGO_SETTINGS_MODULE=dspysite.settings
    DSPY_PROJECT_DIR="$WORK/fixture_project"
    DATABASE_URL="sqlite:///$WORK/db.sqlite3"
)

migrate_once() {
    [[ -n "${MIGRATED:-}" ]] && return 0
    (cd "$ROOT" && env "${OUR_ENV[@]}" "$PY" manage.py migrate --noinput) >"$WORK/migrate.log" 2>&1 \
        || { cat "$WORK/migrate.log" >&2; die "manage.py migrate failed"; }
    MIGRATED=1
}

# Start the server for $1 (mode) on $PORT; sets SERVER_PID, SERVER_NAME, READY_PATH.
start_server() {
    local mode="$1" log="$WORK/server-$1.log"
    PORT="$(free_port)"
    SERVER_URL="http://127.0.0.1:$PORT"
    case "$mode" in
        single | production | dspy-cli-layout)
            migrate_once
            READY_PATH=/health/ready
            if [[ "$mode" == single ]]; then
                SERVER_NAME=ours-single
                (cd "$ROOT" && exec env "${OUR_ENV[@]}" "$PY" -m uvicorn dspysite.asgi:application \
                    --host 127.0.0.1 --port "$PORT" --no-access-log --timeout-keep-alive 65) >"$log" 2>&1 &
            elif [[ "$mode" == dspy-cli-layout ]]; then
                SERVER_NAME=ours-dspy-cli-layout
                (cd "$ROOT" && exec env "${LAYOUT_ENV[@]}" "$PY" -m uvicorn dspysite.asgi:application \
                    --host 127.0.0.1 --port "$PORT" --no-access-log --timeout-keep-alive 65) >"$log" 2>&1 &
            else
                SERVER_NAME=ours-gunicorn
                # gunicorn's control socket defaults to one path per user (~/.gunicorn): this run's
                # own, so it never touches another gunicorn on the machine.
                (cd "$ROOT" && exec env "${OUR_ENV[@]}" BIND="127.0.0.1:$PORT" WEB_CONCURRENCY="$WORKERS" \
                    "$PY" -m gunicorn -c dspysite/gunicorn.conf.py --control-socket "$WORK/gunicorn.ctl") \
                    >"$log" 2>&1 &
            fi
            ;;
        bare-proxy)
            SERVER_NAME=bare-proxy
            READY_PATH=/health/ready
            (cd "$ROOT" && exec env BARE_PROXY_UPSTREAM="$MOCK_URL/v1" "$PY" -m uvicorn \
                loadtest.bare_proxy:app --host 127.0.0.1 --port "$PORT" --no-access-log \
                --timeout-keep-alive 65) >"$log" 2>&1 &
            ;;
        dspy-cli)
            ensure_dspy_cli
            SERVER_NAME=dspy-cli
            READY_PATH=/programs
            # --system: serve with this interpreter (the dspy-cli venv) instead of looking for a
            # project .venv; --no-save-openapi: do not write openapi.json.
            (cd "$PROJECT" && LITELLM_LOCAL_MODEL_COST_MAP=True exec "$DSPY_CLI_VENV/bin/dspy-cli" serve \
                --system --no-reload --no-save-openapi --host 127.0.0.1 --port "$PORT" \
                --logs-dir "$WORK/dspy-cli-logs" \
                ${DSPY_CLI_SYNC_WORKERS:+--sync-workers "$DSPY_CLI_SYNC_WORKERS"}) >"$log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_ready "$SERVER_URL$READY_PATH" "$SERVER_PID" "$log"
    if [[ "$mode" == production ]]; then
        # One worker answering is not all of them: wait for every worker's start-up line.
        local deadline=$((SECONDS + READY_TIMEOUT_S))
        until (($(grep -c 'Application startup complete' "$log") >= WORKERS)); do
            kill -0 "$SERVER_PID" 2>/dev/null || die "gunicorn exited (see $log)"
            ((SECONDS < deadline)) || die "not all $WORKERS gunicorn workers started (see $log)"
            sleep 0.1
        done
    fi
    local listing
    listing="$(curl -fsS "$SERVER_URL/programs")"
    [[ "$listing" == *"\"$PROGRAM\""* ]] || die "$SERVER_NAME does not serve $PROGRAM (GET /programs)"
    echo "run_benchmark: $SERVER_NAME ready on $SERVER_URL (PID $SERVER_PID)"
}

# A few requests before measuring (first-call imports and connection set-up), each checked.
warm_up() {
    local i question answer
    for ((i = 1; i <= WARMUP_REQUESTS; i++)); do
        question="warm-up $i of $$ for $SERVER_NAME"
        answer="$(curl -fsS --max-time 30 -H 'content-type: application/json' \
            -d "{\"question\": \"$question\"}" "$SERVER_URL/$PROGRAM" | jq -r .answer)" \
            || die "warm-up request $i to $SERVER_URL/$PROGRAM failed"
        [[ "$answer" == *"$question"* ]] || die "warm-up answer does not echo its question: $answer"
    done
}

# Wait (bounded) until the mock has no request in flight, then save its counters to $1.
mock_stats_when_idle() {
    local out="$1" deadline=$((SECONDS + 30))
    while :; do
        curl -fsS "$MOCK_URL/stats" >"$out"
        [[ "$(jq -r .in_flight "$out")" == 0 ]] && return 0
        ((SECONDS < deadline)) || { echo "run_benchmark: mock still busy: $(cat "$out")" >&2; return 0; }
        sleep 0.1
    done
}

run_mode() {
    local mode="$1" label locust_rc=0 report_rc=0 workers=1 layout=fixture
    start_server "$mode"
    [[ "$mode" != production ]] || workers="$WORKERS"
    # Which config was served: the fixture's own (declared_models) or the dspy-cli project's.
    if [[ "$mode" == dspy-cli || "$mode" == dspy-cli-layout ]]; then layout=dspy-cli; fi
    [[ "$mode" != bare-proxy ]] || layout=none
    if [[ -n "$LABEL" && ${#MODE_LIST[@]} -eq 1 ]]; then
        label="$LABEL"
    elif [[ -n "$LABEL" ]]; then
        label="${LABEL}_${SERVER_NAME}"
    elif [[ "$mode" == production ]]; then
        label="${SERVER_NAME}${WORKERS}_${PROGRAM}_u${USERS}_d${MOCK_DELAY_MS}"
    else
        label="${SERVER_NAME}_${PROGRAM}_u${USERS}_d${MOCK_DELAY_MS}"
    fi
    warm_up
    curl -fsS -X POST "$MOCK_URL/stats/reset" >/dev/null

    "$PY" "$HERE/summarize.py" sample --pid "server=$SERVER_PID" --pid "mock=$MOCK_PID" \
        --out "$WORK/usage-$mode.json" --ready "$WORK/sampler-$mode.ready" &
    local sampler_pid=$! deadline=$((SECONDS + 30))
    STARTED_PIDS+=("$sampler_pid")
    until [[ -e "$WORK/sampler-$mode.ready" ]]; do
        kill -0 "$sampler_pid" 2>/dev/null || die "the resource sampler exited"
        ((SECONDS < deadline)) || die "the resource sampler did not start"
        sleep 0.05
    done

    echo "run_benchmark: $label: $USERS users (spawn rate $SPAWN_RATE/s) for $DURATION," \
        "mock delay ${MOCK_DELAY_MS} ms, program $PROGRAM"
    # --stop-timeout lets every request in flight at the end finish and be counted, so the
    # mock's completions can be compared exactly with locust's successes. In the background and
    # waited for, so that a TERM or Ctrl-C reaches the trap at once (and stops locust too).
    (cd "$ROOT" && exec "$PY" -m locust -f "$HERE/locustfile.py" --headless --only-summary \
        --users "$USERS" --spawn-rate "$SPAWN_RATE" --run-time "$DURATION" \
        --stop-timeout "$STOP_TIMEOUT_S" --host "$SERVER_URL" \
        --csv "$RESULTS_DIR/$label" --html "$RESULTS_DIR/$label.html" "$PROGRAM") \
        >"$WORK/locust-$label.log" 2>&1 &
    local locust_pid=$!
    STARTED_PIDS+=("$locust_pid")
    wait "$locust_pid" || locust_rc=$?
    forget_pid "$locust_pid"
    grep -E '^(Type|POST|GET| *Aggregated|locustfile:)' "$WORK/locust-$label.log" | head -n 12 || true

    mock_stats_when_idle "$WORK/mock-stats-$mode.json"
    stop_pid "$sampler_pid" 10
    forget_pid "$sampler_pid"
    stop_pid "$SERVER_PID" 30
    forget_pid "$SERVER_PID"

    [[ -f "$RESULTS_DIR/${label}_stats.csv" ]] || {
        tail -n 30 "$WORK/locust-$label.log" >&2
        die "locust wrote no $RESULTS_DIR/${label}_stats.csv"
    }
    "$PY" "$HERE/summarize.py" report --label "$label" --stats "$RESULTS_DIR/${label}_stats.csv" \
        --usage "$WORK/usage-$mode.json" --mock-stats "$WORK/mock-stats-$mode.json" \
        --calls-per-request "$CALLS_PER_REQUEST" --out "$RESULTS_DIR/${label}_server.json" \
        --meta "server=$SERVER_NAME" --meta "mode=$mode" --meta "program=$PROGRAM" \
        --meta "users=$USERS" --meta "spawn_rate=$SPAWN_RATE" --meta "duration=$DURATION" \
        --meta "delay_ms=$MOCK_DELAY_MS" \
        --meta "workers=$workers" --meta "layout=$layout" \
        --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" || report_rc=$?
    if ((locust_rc != 0)); then
        echo "run_benchmark: $label: locust exited with $locust_rc (failure ratio above 1%?)" >&2
        grep -E '^ *[0-9]+ +(POST|GET)' "$WORK/locust-$label.log" | head -n 5 >&2 || true
    fi
    if ((locust_rc == 0 && report_rc == 0)); then RUN_OK=1; else RUN_OK=0; fi
}

start_mock
prepare_project
status=0
for mode in "${MODE_LIST[@]}"; do
    run_mode "$mode"  # not in an `||` list: errexit stays on inside it
    ((RUN_OK)) || status=1
done
exit "$status"
