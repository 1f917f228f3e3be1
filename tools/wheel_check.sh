#!/usr/bin/env bash
# Install papersift as a pip user would and use it from outside the repository: build the
# wheel, install it into a fresh virtualenv in a temporary folder, check the dependencies
# (pip check), then from another directory run the demo (no serve), an ingest, a search in
# each mode, the missing-model errors, and serve one page over loopback with a bounded
# wait. Everything it makes is removed at the end. Exit status non-zero on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/papersift-wheel.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'wheel check FAILED: %s\n' "$*" >&2; exit 1; }

step "build the wheel"
# From a copy: a build/ folder left in the tree by an earlier build could put stale files in.
mkdir -p "$WORK/src"
tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
  --exclude=./test-artifacts --exclude=__pycache__ -cf - . | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src" >/dev/null
WHEEL="$(ls "$WORK"/dist/papersift-*.whl)"
ls -l "$WHEEL"

step "install it into a fresh virtualenv ($WORK/venv)"
"$PY" -m venv "$WORK/venv"
VENV_BIN="$WORK/venv/bin"
"$VENV_BIN/pip" install -q --disable-pip-version-check "$WHEEL"
"$VENV_BIN/pip" check
PS="$VENV_BIN/papersift"

# From a directory that is not the repository, with a home of its own.
mkdir -p "$WORK/elsewhere" "$WORK/no-model"
cd "$WORK/elsewhere"
export PAPERSIFT_HOME="$WORK/home" PAPERSIFT_CACHE="$WORK/cache"
unset PAPERSIFT_DB PAPERSIFT_MODEL_DIR PAPERSIFT_EMBED_CACHE PAPERSIFT_CONFIG

step "papersift demo --no-serve"
start=$(date +%s)
"$PS" demo --no-serve
echo "demo took $(( $(date +%s) - start )) s"

step "papersift ingest"
cat > "$WORK/elsewhere/papers.jsonl" <<'JSONL'
{"id": "2401.99901", "title": "Wheel-installed retrieval of zebra finch songs", "abstract": "A test paper about zebra finch song retrieval with sparse and dense encoders.", "authors": ["Ada Lovelace"], "date": "2024-01-05"}
JSONL
"$PS" ingest -q papers.jsonl

last_json() { tail -n 1; }
hits() { "$VENV_BIN/python" -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(len(d["hits"]), d["hits"][0]["id"] if d["hits"] else "-")'; }
for mode in lexical semantic hybrid; do
  step "papersift search --mode $mode"
  out="$("$PS" search "zebra finch song retrieval" --mode "$mode" -k 3 --json)"
  read -r n first <<<"$(printf '%s\n' "$out" | hits)"
  echo "$mode: $n hits, first $first"
  [ "$n" -gt 0 ] || fail "$mode search found nothing"
  [ "$first" = "2401.99901" ] || fail "$mode search ranked $first first, not the ingested paper"
done
out="$("$PS" search "diffusion models for video editing" --mode hybrid -k 3 --json)"
read -r n first <<<"$(printf '%s\n' "$out" | hits)"
[ "$n" -eq 3 ] || fail "hybrid search of the demo corpus found $n papers"

step "a missing model: keyword search works, semantic search is an error"
export PAPERSIFT_MODEL_DIR="$WORK/no-model"
out="$("$PS" search "zebra finch" --mode lexical --json)"
read -r n first <<<"$(printf '%s\n' "$out" | hits)"
[ "$n" -gt 0 ] || fail "lexical search needed the model"
if "$PS" search "zebra finch" --mode semantic >"$WORK/semantic.out" 2>&1; then
  fail "semantic search without a model exited 0"
fi
grep -q "semantic search needs the embedding model" "$WORK/semantic.out" || fail "no clear message: $(cat "$WORK/semantic.out")"
unset PAPERSIFT_MODEL_DIR

step "papersift serve: one page over loopback"
PORT="$("$VENV_BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$PS" serve --host 127.0.0.1 --port "$PORT" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
ok=""
for _ in $(seq 1 120); do  # at most 60 s
  if "$VENV_BIN/python" - "$PORT" <<'PYCODE'
import sys, urllib.request
port = sys.argv[1]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q=zebra+finch", timeout=5) as r:
        body = r.read().decode()
        sys.exit(0 if r.status == 200 and "zebra finch" in body.lower() else 1)
except Exception:
    sys.exit(1)
PYCODE
  then ok=1; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log"; fail "serve exited"; }
  sleep 0.5
done
[ -n "$ok" ] || { cat "$WORK/serve.log"; fail "no page from serve within 60 s"; }
echo "served /search on 127.0.0.1:$PORT"

kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

step "papersift demo on a fresh home and cache: seconds from start to the first page"
export PAPERSIFT_HOME="$WORK/home-demo" PAPERSIFT_CACHE="$WORK/cache-demo"
started="$("$VENV_BIN/python" -c 'import time; print(time.time())')"
"$PS" demo --port "$PORT" >"$WORK/demo.log" 2>&1 &
SERVER_PID=$!
waited="$("$VENV_BIN/python" - "$PORT" "$started" <<'PYCODE'
import sys, time, urllib.request
port, started = sys.argv[1], float(sys.argv[2])
while time.time() - started < 120:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            if r.status == 200:
                print(f"{time.time() - started:.1f}")
                break
    except Exception:
        time.sleep(0.2)
PYCODE
)"
[ -n "$waited" ] || { cat "$WORK/demo.log"; fail "papersift demo served nothing within 120 s"; }
echo "papersift demo served its first page ${waited} s after it started"

printf '\nwheel check passed\n'
