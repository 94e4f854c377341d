#!/bin/busybox sh
# PID 1 of clonet's busybox guest image (uml and kvm nodes).
# Kernel command line: clonet.hostname=NAME, clonet.agent=TTY (run the
# guest agent on /dev/TTY) or clonet.agent=virtio:NAME (on the
# virtio-serial port called NAME), clonet.selftest=1 (report and power off) or
# clonet.selftest=hold (report and wait).
export PATH=/bin:/sbin:/usr/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t tmpfs tmpfs /tmp
busybox mount -t tmpfs tmpfs /run
for arg in $(busybox cat /proc/cmdline); do
    case "$arg" in
        clonet.hostname=*) busybox hostname "${arg#clonet.hostname=}" ;;
        clonet.selftest=1) selftest=1 ;;
        clonet.selftest=hold) hold=1 ;;
        clonet.agent=virtio:*) port="${arg#clonet.agent=virtio:}" ;;
        clonet.agent=*) agent="/dev/${arg#clonet.agent=}" ;;
    esac
done
# kvm guests: the agent's virtio-serial port, found by its name.
if [ -n "$port" ]; then
    for p in /sys/class/virtio-ports/*; do
        [ "$(busybox cat "$p/name" 2>/dev/null)" = "$port" ] && agent="/dev/${p##*/}"
    done
fi
busybox ip link set lo up
# UML names vector NICs vecN: give them the names every node kind uses.
for dev in /sys/class/net/vec*; do
    [ -e "$dev" ] || continue
    n=${dev##*/vec}
    busybox ip link set "vec$n" name "eth$n"
done
if [ -n "$agent" ]; then
    busybox setsid /bin/clonet-agent "$agent" </dev/null >/dev/null 2>&1 &
fi
if [ -n "$selftest" ]; then
    echo "clonet-image-ok $(busybox hostname) $(busybox uname -r)"
    busybox poweroff -f
fi
if [ -n "$hold" ]; then
    echo "clonet-image-holding"
    exec busybox sleep 2147483647
fi
# The console: a login shell with the console as its controlling tty,
# started again whenever it exits (`clonet console NODE` attaches to it).
while :; do
    busybox setsid busybox cttyhack busybox sh -l
    busybox sleep 1
done
