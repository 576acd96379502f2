#!/usr/bin/env bash
# Re-capture the real nft output in this folder (run as root from the repository root, after
# the golden case `advanced` changed): loads tests/golden/advanced/expected.nft into a
# throwaway network namespace, adds a few elements, and saves what nft prints.
set -euo pipefail
ns="awp-capture-$$"
out="$(dirname "$0")"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
n() { ip netns exec "$ns" nft "$@"; }
n -f tests/golden/advanced/expected.nft
n add element inet awp progress4 '{ 198.18.0.2 timeout 15s : 0x00160000 }'
n add element inet awp pos2_4 '{ 198.18.0.2 timeout 15s }'
n add element inet awp open4 '{ 198.18.0.3 . 22 timeout 30s }'
n add element inet awp grant6 '{ 2001:2::7 . 2222 timeout 600s }'
sleep 2
n -j -t list table inet awp > "$out/advanced-table.json"
n -t list table inet awp > "$out/advanced-table.nft"
n -j list counters table inet awp > "$out/counters.json"
n -j list map inet awp progress4 > "$out/map-progress4.json"
n -j list set inet awp grant6 > "$out/set-grant6.json"
n -j list set inet awp open4 > "$out/set-open4.json"
n -j list set inet awp scan4 > "$out/set-scan4-empty.json"
