#!/bin/busybox sh
# First stage of clonet's kvm guests (the initramfs): load the virtio and
# ext4 modules, mount the node's qcow2 disk (/dev/vda) and hand over to
# its /init, the same init uml guests run. clonet.probe=1 on the kernel
# command line only reports that the machine runs, and powers off (the
# KVM probe).
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
if ! busybox mount -t ext4 /dev/vda /newroot; then
    echo "clonet: cannot mount the root disk /dev/vda"
    exec busybox sh
fi
busybox umount /proc /sys
busybox mount --move /dev /newroot/dev
exec busybox switch_root /newroot /init
