#!/usr/bin/env bash
# Soak: runs many labs and ends them every way a lab ends, then counts what
# they left behind. The count must be 0.
#
#   scripts/soak.sh [LABS] [CLONET]
#
# LABS (default 100, a multiple of 4) labs of six ns nodes and one uml
# node on a LAN, each with a marker process in every node; a quarter each
# ends normally, by a script error, by SIGINT, and by SIGKILL followed by
# `clonet clean`. Afterwards it counts, over everything this run made:
# network namespaces, processes (node inits, markers, linux.uml and its
# helpers, clonet itself), mounts, TAPs, sockets, and files under the run
# and storage directories. Run as root (ns nodes need it); everything lives
# under a fresh temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
labs=${1:-100}
clonet=${2:-target/release/clonet}
if [ $((labs % 4)) -ne 0 ]; then
    echo "soak: LABS must be a multiple of 4" >&2
    exit 2
fi
[ -x "$clonet" ] || { echo "soak: $clonet: build it first (cargo build --release)" >&2; exit 2; }
clonet=$(realpath "$clonet")

work=$(mktemp -d /tmp/clonet-soak.XXXXXX)
export CLONET_RUN_DIR=$work/run CLONET_STORAGE_DIR=$work/storage
mkdir -p "$CLONET_STORAGE_DIR"
marker=$((7000 + RANDOM % 1000))
# Network namespaces any process holds (processes come and go while the
# list is read, hence `|| true`).
netns_list() { { ls -l /proc/[0-9]*/ns/net 2>/dev/null || true; } | sed 's/.*-> //' | sort -u; }
netns_before=$(mktemp)
netns_list >"$netns_before"
taps_before=$({ ip -o link show type tun 2>/dev/null || true; } | wc -l)

lab() { # $1: what follows the build
    cat <<EOF
let sw = lan("sw");
for i in 1..=6 {
    let n = node(\`n\${i}\`);
    link(n, sw, #{ ip: \`10.9.0.\${i}/24\` });
    n.exec("sleep $marker >/dev/null 2>&1 &");
}
let u = node("u", #{ kind: "uml" });
link(u, sw, #{ ip: "10.9.0.100/24" });
assert(ping(get_node("n1"), u), "n1 reaches u");
print("ready");
$1
EOF
}
lab "" >"$work/normal.rhai"
lab 'throw "planned error";' >"$work/error.rhai"
lab 'sleep(600000);' >"$work/wait.rhai"

# Starts a waiting lab, returns once it printed "ready" (its pid in $pid).
start_waiting() {
    local out=$work/out.$1
    "$clonet" run --name "soak$1" "$work/wait.rhai" >"$out" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        grep -q '^ready$' "$out" && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; return 1; }
        sleep 0.1
    done
    echo "soak: lab $1 never got ready" >&2
    return 1
}

declare -A ended=([normal]=0 [error]=0 [sigint]=0 [sigkill]=0)
failures=0
started=$(date +%s)
for i in $(seq 1 "$labs"); do
    case $((i % 4)) in
    1)
        "$clonet" run --name "soak$i" "$work/normal.rhai" >"$work/out.$i" 2>&1 || { failures=$((failures + 1)); cat "$work/out.$i" >&2; }
        ended[normal]=$((ended[normal] + 1))
        ;;
    2)
        if "$clonet" run --name "soak$i" "$work/error.rhai" >"$work/out.$i" 2>&1; then failures=$((failures + 1)); fi
        grep -q "planned error" "$work/out.$i" || failures=$((failures + 1))
        ended[error]=$((ended[error] + 1))
        ;;
    3)
        start_waiting "$i" || { failures=$((failures + 1)); continue; }
        kill -INT "$pid"
        wait "$pid" || true
        ended[sigint]=$((ended[sigint] + 1))
        ;;
    0)
        start_waiting "$i" || { failures=$((failures + 1)); continue; }
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        "$clonet" clean >"$work/clean.$i" 2>&1 || failures=$((failures + 1))
        ended[sigkill]=$((ended[sigkill] + 1))
        ;;
    esac
done
elapsed=$(($(date +%s) - started))
sleep 2

count() { printf '%6s  %s\n' "$1" "$2"; }
procs=$({ grep -l -s -e "$work" -e "sleep $marker" /proc/[0-9]*/cmdline 2>/dev/null || true; } | wc -l)
mounts=$(grep -c "$work" /proc/self/mountinfo || true)
netns_now=$(mktemp)
netns_list >"$netns_now"
netns_left=$(comm -13 "$netns_before" "$netns_now" | wc -l)
taps_left=$(($({ ip -o link show type tun 2>/dev/null || true; } | wc -l) - taps_before))
sockets=$(grep -c "$work" /proc/net/unix || true)
files=$(find "$CLONET_RUN_DIR" "$CLONET_STORAGE_DIR" -mindepth 1 2>/dev/null | wc -l)
total=$((procs + mounts + netns_left + (taps_left > 0 ? taps_left : 0) + sockets + files))

echo "soak: $labs labs in ${elapsed}s: ${ended[normal]} normal, ${ended[error]} script error, ${ended[sigint]} SIGINT, ${ended[sigkill]} SIGKILL + clean; $failures failed"
echo "left behind:"
count "$procs" "processes"
count "$netns_left" "network namespaces (new since the start, held by any process)"
count "$mounts" "mounts"
count "$taps_left" "TAPs"
count "$sockets" "unix sockets"
count "$files" "files under the run and storage directories"
count "$total" "in all"
rm -f "$netns_before" "$netns_now"
if [ "$total" -eq 0 ] && [ "$failures" -eq 0 ]; then
    rm -rf "$work"
    exit 0
fi
echo "soak: kept $work for a look" >&2
exit 1
