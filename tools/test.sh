#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine, as root:
#   1. installs the Debian packages the tests use (iperf3, ping, iproute2,
#      e2fsprogs, busybox-static, user-mode-linux, vde-switch and vde2
#      (vde_switch, vde_plug2tap) for the benchmarks' baselines, qemu and a
#      kernel for kvm nodes, btrfs-progs,
#      tshark to read captures back, frr for the routing exercises);
#   2. lints (clippy, warnings denied, every unsafe block documented),
#      builds clonet and runs the unit and integration tests.
# CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(iproute2 iperf3 iputils-ping e2fsprogs busybox-static user-mode-linux vde-switch vde2 qemu-system-x86 qemu-utils linux-image-amd64 btrfs-progs tshark frr chromium chromium-driver)

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: the integration tests create namespaces and TAPs: run as root" >&2
    exit 1
fi
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tools/test.sh: installing ${missing[*]}"
    apt-get update -qq
    # tshark asks whether non-root users may capture: answer no, unasked.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo clippy --version >/dev/null 2>&1; then
    echo "tools/test.sh: cargo clippy is missing (rustup component add clippy)" >&2
    exit 1
fi
cargo clippy --all-targets --locked -- -D warnings -D clippy::undocumented_unsafe_blocks
cargo build --release --locked
cargo test --release --locked
