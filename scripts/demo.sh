#!/usr/bin/env bash
# make demo: a small local swarm (two workers on 127.0.0.1) and one split inference
# across it. Prints the answer, which worker ran which layers, and timings, then
# stops exactly what it started (by pid) and removes its temporary directory.
#
# Environment: BIN (default bin/edgellm), EDGELLM_PYTHON (default .venv/bin/python),
# EDGELLM_MODELS_DIR (default .cache/models, shared with the tests so the model is
# converted once), PROMPT, MAX_TOKENS (default 48), STAGES (default 2).
#
# Ray listens on every interface and swaps a loopback node address for the machine's
# routable one. Run as root with iproute2, the demo therefore re-runs itself in a network
# namespace whose only interface is loopback (scripts/in-netns.sh), so nothing it starts is
# reachable from elsewhere; otherwise it runs on this machine's network (DEMO_NETNS=0 forces
# that; expect Ray to bind the machine's address, as a real worker does).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${DEMO_NETNS:-auto} != 0 && -z ${EDGELLM_DEMO_IN_NETNS:-} && $(id -u) == 0 ]] && command -v ip >/dev/null; then
	EDGELLM_DEMO_IN_NETNS=1 exec scripts/in-netns.sh "$0" "$@"
fi

BIN=${BIN:-bin/edgellm}
PY=${EDGELLM_PYTHON:-$PWD/.venv/bin/python}
export EDGELLM_PYTHON=$PY
export EDGELLM_MODELS_DIR=${EDGELLM_MODELS_DIR:-$PWD/.cache/models}
PROMPT=${PROMPT:-What is the capital of France? Answer in one sentence.}
MAX_TOKENS=${MAX_TOKENS:-48}
STAGES=${STAGES:-2}

work=$(mktemp -d "${TMPDIR:-/tmp}/edgellm-demo.XXXXXX")
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

json_field() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval("d"+sys.argv[2]))' "$@"; }

# start_worker NAME [extra flags]: starts a worker and waits for its worker.json.
start_worker() {
	local name=$1; shift
	mkdir -p "$work/$name"
	"$BIN" --data-dir "$work/$name" worker --no-mdns --join-file "$work/swarm/swarm.join" \
		--listen /ip4/127.0.0.1/tcp/0 --label "demo-$name" "$@" 2>"$work/$name.log" &
	local pid=$!
	pids+=("$pid")
	local deadline=$((SECONDS + 300))
	until [[ -s $work/$name/worker.json ]]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: worker $name exited:" >&2; cat "$work/$name.log" >&2; exit 1
		fi
		if ((SECONDS > deadline)); then echo "demo: worker $name did not start" >&2; exit 1; fi
		sleep 0.2 # polls a condition: the worker writes worker.json once it has joined
	done
	echo "worker $name: $(json_field "$work/$name/worker.json" '["peer_id"]') (pid $pid)"
}

if [[ -n ${EDGELLM_DEMO_IN_NETNS:-} ]]; then
	echo "(running in a loopback-only network namespace)"
fi
# The join string stays in the 0600 file swarm init saves; it is passed by file, never
# on a command line (ps shows those to every local user).
"$BIN" --data-dir "$work/swarm" swarm init >/dev/null 2>"$work/swarm.log" || { cat "$work/swarm.log" >&2; exit 1; }
echo "Starting two workers (the first start converts the model once; later ones take seconds)…"
start_worker a
boot=$(json_field "$work/a/worker.json" '["addrs"][0]')
start_worker b --bootstrap "$boot"
# Wait until the swarm lists both workers (each peers run searches up to its --timeout).
for _ in 1 2 3 4 5 6; do
	n=$("$BIN" --data-dir "$work/requester" peers --json --join-file "$work/swarm/swarm.join" --no-mdns --bootstrap "$boot" --timeout 5s |
		"$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')
	((n >= 2)) && break
done

echo
echo "Prompt: $PROMPT"
start=$(date +%s.%N)
"$BIN" --data-dir "$work/requester" infer --json --join-file "$work/swarm/swarm.join" --no-mdns --bootstrap "$boot" \
	--listen /ip4/127.0.0.1/tcp/0 --ray-address 127.0.0.1 --stages "$STAGES" \
	--max-tokens "$MAX_TOKENS" "$PROMPT" >"$work/answer.json"
end=$(date +%s.%N)
"$PY" - "$work/answer.json" "$start" "$end" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("Answer:", r["text"].strip())
print()
for i, s in enumerate(r["stages"], 1):
    rtt = "-" if s["rtt_ms"] is None else f'{s["rtt_ms"]:.2f} ms'
    print(f'stage {i}: layers [{s["layer_start"]},{s["layer_end"]}) on {s["peer_id"]} (ray {s["ray_address"]}, rtt {rtt})')
print()
print(f'{r["completion_tokens"]} tokens ({r["finish_reason"]}) from {r["prompt_tokens"]} prompt tokens; '
      f'time to first token {r["ttft_ms"]:.0f} ms, decode {r["tokens_per_s"]:.1f} tok/s, '
      f'generation {r["total_ms"]:.0f} ms; whole command (discover, plan, Ray cluster, run, tear down) '
      f'{float(sys.argv[3]) - float(sys.argv[2]):.1f} s')
PYEOF
echo
echo "Stopping the workers…"
