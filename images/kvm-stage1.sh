#!/bin/busybox sh
# First stage of clonet's kvm guests (the initramfs): load the virtio and
# ext4 modules, mount the node's root disk (an ext4 file system on
# /dev/vda or on one of its partitions) and hand over to its init.
# clonet's own disk has /init and the agent. Any other root (the user's
# image) gets the agent from here, copied to /.clonet on the node's
# overlay (the user's image is never written), started by
# /.clonet/init before the root's own /sbin/init.
# clonet.probe=1 on the kernel command line only reports that the machine
# runs, and powers off (the KVM probe).
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
if busybox grep -q clonet.probe=1 /proc/cmdline; then
    echo "clonet-kvm-probe-ok"
    busybox poweroff -f
fi
for m in $(busybox cat /modules.order); do
    busybox insmod "$m" 2>/dev/null
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do busybox usleep 20000; i=$((i+1)); done
busybox usleep 50000
root=
for dev in /dev/vda /dev/vda1 /dev/vda2 /dev/vda3 /dev/vda4; do
    if [ -b "$dev" ] && busybox mount -t ext4 "$dev" /newroot 2>/dev/null; then
        root=$dev
        break
    fi
done
if [ -z "$root" ]; then
    echo "clonet: cannot mount the root disk: no ext4 file system on /dev/vda or its partitions"
    busybox poweroff -f
fi
next=/init
if [ ! -x /newroot/bin/clonet-agent ]; then
    busybox mkdir -p /newroot/.clonet/bin
    busybox cp /bin/busybox /newroot/.clonet/bin/busybox
    busybox cp /clonet-agent /newroot/.clonet/agent
    busybox cp /clonet-user-init /newroot/.clonet/init
    busybox chmod 755 /newroot/.clonet/init /newroot/.clonet/agent
    next=/.clonet/init
fi
busybox umount /proc /sys
busybox mount --move /dev /newroot/dev
exec busybox switch_root /newroot "$next"
