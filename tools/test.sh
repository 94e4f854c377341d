#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine, as root:
#   1. installs, in one apt-get call, the Debian packages the tests use
#      (iperf3, ping, iproute2,
#      e2fsprogs, busybox-static, user-mode-linux, vde-switch and vde2
#      (vde_switch, vde_plug2tap) for the benchmarks' baselines, qemu and a
#      kernel for kvm nodes, btrfs-progs,
#      tshark to read captures back, frr for the routing exercises, chromium
#      and its driver for the GUI, uidmap for rootless labs, passt for nat
#      endpoints, nftables for masquerading routers), then checks
#      every command the tests run is there, and makes the ordinary user
#      `clonet-test` (with subordinate ids) the rootless tests run as;
#   2. lints (clippy, warnings denied, every unsafe block documented),
#      builds clonet and runs the unit and integration tests.
# CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(iproute2 iperf3 iputils-ping e2fsprogs busybox-static user-mode-linux vde-switch vde2 qemu-system-x86 qemu-utils linux-image-amd64 btrfs-progs tshark frr chromium chromium-driver util-linux procps uidmap passwd passt nftables socat skopeo docker-registry ethtool)

# Every command the tests run, and the package that brings it.
COMMANDS=(
    ip:iproute2 bridge:iproute2 iperf3:iperf3 ping:iputils-ping mkfs.ext4:e2fsprogs busybox:busybox-static
    linux.uml:user-mode-linux vde_switch:vde-switch vde_plug2tap:vde2
    qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils mkfs.btrfs:btrfs-progs btrfs:btrfs-progs
    tshark:tshark vtysh:frr chromium:chromium chromedriver:chromium-driver
    setpriv:util-linux mount:util-linux umount:util-linux ps:procps ldd:libc-bin timeout:coreutils dd:coreutils
    newuidmap:uidmap newgidmap:uidmap useradd:passwd usermod:passwd passt:passt pasta:passt nft:nftables socat:socat
    skopeo:skopeo docker-registry:docker-registry ethtool:ethtool
)

# The ordinary user the rootless tests run labs as, with a range of
# subordinate ids (FRR switches to its own user, which a lab maps only
# from such a range).
TEST_USER=clonet-test

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: the integration tests create namespaces and TAPs: run as root" >&2
    exit 1
fi
# One install of every package, whatever dpkg says is there already: apt
# resolves them together, so one cannot remove another behind our back.
# The QEMU packages are asked for at the version of qemu-system-x86 apt
# will install: a newer qemu-utils (from backports) and QEMU 7.2 cannot
# stay together, and apt would otherwise drop qemu-img to install QEMU.
echo "tools/test.sh: installing ${PACKAGES[*]}"
apt-get update -qq
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    echo "tools/test.sh: apt knows no qemu-system-x86 package (is Debian's main archive in the sources?)" >&2
    exit 1
fi
# Every QEMU package, asked for or already there, at that one version.
qemu_packages=(qemu-system-x86 qemu-system-common qemu-system-data qemu-utils)
mapfile -t -O ${#qemu_packages[@]} qemu_packages < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'qemu-*' 2>/dev/null |
    awk '$1 == "ii" { print $2 }')
wanted=()
for p in "${PACKAGES[@]}"; do
    case "$p" in qemu-*) ;; *) wanted+=("$p") ;; esac
done
# (Architecture-independent ones carry the version without a rebuild's
# `+bN`.)
for p in $(printf '%s\n' "${qemu_packages[@]}" | sort -u); do
    v=$(apt-cache madison "$p" | awk -v a="$qemu_version" -v b="${qemu_version%+b[0-9]*}" '$3 == a || $3 == b { print $3; exit }')
    if [ -z "$v" ]; then
        echo "tools/test.sh: apt has no $p at version $qemu_version, the version of qemu-system-x86" >&2
        exit 1
    fi
    wanted+=("$p=$v")
done
# tshark asks whether non-root users may capture: answer no, unasked.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades "${wanted[@]}" >/dev/null

missing=()
for entry in "${COMMANDS[@]}"; do
    command -v "${entry%%:*}" >/dev/null || missing+=("${entry%%:*} (package ${entry#*:})")
done
if ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    missing+=("a kernel in /boot (package linux-image-amd64)")
fi
if [ ${#missing[@]} -gt 0 ]; then
    printf 'tools/test.sh: missing after the install: %s\n' "${missing[@]}" >&2
    exit 1
fi

if ! id "$TEST_USER" >/dev/null 2>&1; then
    useradd --no-create-home --shell /usr/sbin/nologin "$TEST_USER"
fi
# useradd gives a new user subordinate ids where login.defs says so; give
# them here otherwise, after every range already handed out.
for kind in uid gid; do
    if ! grep -q "^$TEST_USER:" "/etc/sub$kind"; then
        next=$(awk -F: 'BEGIN { m = 100000 } { if ($2 + $3 > m) m = $2 + $3 } END { print m }' "/etc/sub$kind")
        usermod "--add-sub${kind}s" "$next-$((next + 65535))" "$TEST_USER"
    fi
done

if ! cargo clippy --version >/dev/null 2>&1; then
    echo "tools/test.sh: cargo clippy is missing (rustup component add clippy)" >&2
    exit 1
fi
cargo clippy --all-targets --locked -- -D warnings -D clippy::undocumented_unsafe_blocks
cargo build --release --locked
cargo test --release --locked
