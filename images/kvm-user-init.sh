#!/.clonet/bin/busybox sh
# Init of a kvm node booting a user's own root file system: starts
# clonet's agent (brought in by the initramfs, on the node's overlay) and
# then the root's own init.
bb=/.clonet/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
$bb mount -t sysfs sysfs /sys 2>/dev/null
$bb mount -t tmpfs tmpfs /tmp 2>/dev/null
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
        clonet.hostname=*) $bb hostname "${arg#clonet.hostname=}" ;;
        clonet.agent=virtio:*) port="${arg#clonet.agent=virtio:}" ;;
    esac
done
for p in /sys/class/virtio-ports/*; do
    [ "$($bb cat "$p/name" 2>/dev/null)" = "$port" ] && agent="/dev/${p##*/}"
done
$bb ip link set lo up 2>/dev/null
# The root's own tools first, busybox's applets as a fallback.
PATH=/usr/sbin:/usr/bin:/sbin:/bin:/.clonet/bin
export PATH
$bb setsid $bb sh /.clonet/agent "$agent" </dev/null >/dev/null 2>&1 &
for init in /sbin/init /etc/init /bin/init; do
    [ -x "$init" ] && exec "$init"
done
exec $bb sh
