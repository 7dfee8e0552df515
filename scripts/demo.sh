#!/usr/bin/env bash
# demo.sh: start a local cluster (`dfs dev`: a master and 3 minions in one
# process, on loopback), put a 10 MiB random file with replication 3, get it
# back, compare, check that a client without the cluster secret (which dfs dev
# made) is refused, and stop the cluster with Ctrl+C's signal.
set -euo pipefail

DFS=${DFS:-./dfs}
work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -INT "$pid" && wait "$pid" || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

"$DFS" dev --addr 127.0.0.1:0 --minions 3 --dir "$work/cluster" --block-size 4MiB >"$work/dev.out" 2>"$work/dev.log" &
pid=$!
for _ in $(seq 100); do
	grep -q '^DFS_MASTER=' "$work/dev.out" 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/dev.log" >&2; exit 1; }
	sleep 0.1
done
DFS_MASTER=$(sed -n 's/^DFS_MASTER=//p' "$work/dev.out")
DFS_SECRET_FILE=$(sed -n 's/^DFS_SECRET_FILE=//p' "$work/dev.out")
[ -n "$DFS_MASTER" ] && [ -n "$DFS_SECRET_FILE" ] || { echo "demo: the cluster did not start" >&2; cat "$work/dev.log" >&2; exit 1; }
export DFS_MASTER DFS_SECRET_FILE
echo "== cluster up: master at $DFS_MASTER, 3 minions, data in $work/cluster, cluster secret in $DFS_SECRET_FILE"

head -c $((10 << 20)) /dev/urandom >"$work/in.bin"
set -x
"$DFS" put "$work/in.bin" /demo/in.bin
"$DFS" ls -R /
"$DFS" stat /demo/in.bin
"$DFS" get /demo/in.bin >"$work/out.bin"
cmp "$work/in.bin" "$work/out.bin"
"$DFS" rm /demo/in.bin
set +x
if DFS_SECRET_FILE= "$DFS" ls / 2>"$work/refused.txt"; then
	echo "demo: a client without the cluster secret got in" >&2
	exit 1
fi
echo "== without the secret: $(cat "$work/refused.txt")"
echo "== demo OK: 10 MiB put and got back byte for byte, with 3 replicas of each block"
