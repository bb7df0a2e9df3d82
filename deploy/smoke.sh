#!/usr/bin/env bash
# Container smoke test: build the image, run it, check it as a visitor and an operator
# would, then stop and remove the container it started. Works with docker or podman.
#
#   deploy/smoke.sh [extra arguments for `build`, e.g. --build-arg TORCH_INDEX_URL=...]
#
# Environment: ENGINE (docker or podman; default: docker if its engine answers, else podman), IMAGE
# (default attnviz:smoke), PORT (8501), PUBLISH (how the port is published; default
# "-p 127.0.0.1:$PORT:8501", empty with RUN_ARGS=--network=host), RUN_ARGS (extra
# arguments for `run`), PYTHON (an interpreter with playwright, default .venv/bin/python),
# CHROMIUM (/usr/bin/chromium), BOUND_S (3: healthy -> first page, seconds),
# REMOVE_IMAGE=1 to delete the image at the end, PRETRAINED_SMOKE=ARCH.TAG to bake that one
# timm model into the image from a local stand-in for the Hugging Face hub
# (tests/hub_server.py, random weights; the build needs --network=host to reach it) and
# check that it loads in a container with no network. docs/deploy.md says how to run it
# where only podman exists.
set -euo pipefail
cd "$(dirname "$0")/.."

# docker if its engine answers (a docker client without a daemon is common), else podman
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    fi
fi
[ -n "${ENGINE:-}" ] || { echo "smoke: no docker engine answers and podman is not installed" >&2; exit 2; }
IMAGE=${IMAGE:-attnviz:smoke}
PORT=${PORT:-8501}
PUBLISH=${PUBLISH--p 127.0.0.1:$PORT:8501}
RUN_ARGS=${RUN_ARGS:-}
PYTHON=${PYTHON:-.venv/bin/python}
BOUND_S=${BOUND_S:-3}
NAME=attnviz-smoke-$$
URL=http://127.0.0.1:$PORT

step() { printf '%s  %s\n' "$(date +%T)" "$*"; }
fail() { printf '%s  FAILED: %s\n' "$(date +%T)" "$*" >&2; exit 1; }
cleanup() {
    "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
    if [ "${REMOVE_IMAGE:-0}" = 1 ]; then "$ENGINE" rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

format=()
case "$(basename "$ENGINE")" in podman) format=(--format docker) ;; esac  # keeps the HEALTHCHECK

build_args=()
if [ -n "${PRETRAINED_SMOKE:-}" ]; then
    hub_log=$(mktemp)
    "$PYTHON" -m tests.hub_server "$PRETRAINED_SMOKE" >"$hub_log" 2>&1 &
    hub_pid=$!
    trap 'kill "$hub_pid" 2>/dev/null || true; cleanup' EXIT
    for _ in $(seq 1 120); do [ -s "$hub_log" ] && break; sleep 0.5; done
    hub_url=$(head -1 "$hub_log")
    case "$hub_url" in http://127.0.0.1:*) ;; *) cat "$hub_log" >&2; fail "the local hub did not start" ;; esac
    step "local hub at $hub_url serves timm/$PRETRAINED_SMOKE"
    build_args=(--build-arg "PRETRAINED=$PRETRAINED_SMOKE" --build-arg "HF_ENDPOINT=$hub_url")
fi

step "build $IMAGE with $ENGINE $* ${build_args[*]}"
t0=$(date +%s)
"$ENGINE" build "${format[@]}" "$@" "${build_args[@]}" -t "$IMAGE" . >/tmp/attnviz-smoke-build.log 2>&1 \
    || { tail -30 /tmp/attnviz-smoke-build.log >&2; fail "build (log: /tmp/attnviz-smoke-build.log)"; }
step "built in $(( $(date +%s) - t0 )) s"

step "run $NAME"
# shellcheck disable=SC2086  # PUBLISH and RUN_ARGS are lists of arguments
"$ENGINE" run -d --name "$NAME" $PUBLISH $RUN_ARGS "$IMAGE" >/dev/null
t0=$(date +%s.%N)
healthy=""
for _ in $(seq 1 600); do
    if [ "$(curl -s -m 2 "$URL/_stcore/health" || true)" = ok ]; then healthy=$(date +%s.%N); break; fi
    "$ENGINE" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null | grep -q true \
        || { "$ENGINE" logs "$NAME" | tail -30 >&2; fail "the container exited"; }
    sleep 0.5
done
[ -n "$healthy" ] || fail "no ok from $URL/_stcore/health within 300 s"
step "healthy after $(printf '%.1f' "$(echo "$healthy - $t0" | bc)") s (models loaded before health says ok)"

uid=$("$ENGINE" exec "$NAME" id -u)
[ "$uid" = 10001 ] || fail "runs as uid $uid, not 10001"
step "runs as uid $uid"
if "$ENGINE" exec "$NAME" sh -c 'touch /app/smoke 2>/dev/null || touch /opt/venv/smoke 2>/dev/null'; then
    fail "/app or /opt/venv is writable by the app's user"
fi
step "/app and /opt/venv cannot be written"

step "first page in Chromium"
"$PYTHON" - "$URL" "$BOUND_S" <<'PY' || fail "the first page (bound ${BOUND_S} s, no exception)"
import sys, time
sys.path.insert(0, ".")
from tests.browser import chromium_page
url, bound = sys.argv[1], float(sys.argv[2])
with chromium_page() as page:
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_text("Imagenette val top-1").nth(3).wait_for(timeout=60_000)  # all four models' predictions
    page.wait_for_function("() => document.querySelectorAll('[data-top5]').length >= 4", timeout=60_000)
    shown = time.perf_counter() - t0
    exceptions = page.locator('[data-testid="stException"]').count()
    print(f"  first page with every model's predictions {shown:.2f} s after healthy; "
          f"{exceptions} exceptions, {len(errors)} script errors")
    sys.exit(0 if shown <= bound and not exceptions and not errors else 1)
PY

step "CLI with no network"
"$ENGINE" run --rm --network=none "$IMAGE" python -m attnviz models | sed 's/^/  /' \
    || fail "the CLI in a container with no network"

if [ -n "${PRETRAINED_SMOKE:-}" ]; then
    step "the baked-in timm:$PRETRAINED_SMOKE with no network"
    "$ENGINE" run --rm --network=none "$IMAGE" python -c "import attnviz; m = attnviz.load_model('timm:$PRETRAINED_SMOKE'); print('  loaded', m.attnviz_meta.name, len(m.attnviz_meta.classes), 'classes, from', m.attnviz_meta.training['weights'])" \
        || fail "timm:$PRETRAINED_SMOKE does not load from the image's cache"
fi

step "stop (SIGTERM)"
t0=$(date +%s.%N)
"$ENGINE" stop -t 30 "$NAME" >/dev/null
step "stopped in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s, exit code $("$ENGINE" inspect -f '{{.State.ExitCode}}' "$NAME")"
"$ENGINE" rm "$NAME" >/dev/null
step "smoke test passed"
