#!/bin/busybox sh
# /init of the platter rescue medium, written by `platter rescue build`.
# Mounts the kernel's filesystems, loads the medium's drivers (dependencies
# first, in the order /etc/rescue/modules lists them), starts DHCP on every
# network card, then hands over to busybox init (/etc/inittab), which runs
# `platter rescue start` once and the menu on the screen and the serial
# console.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
hostname platter-rescue
echo "platter rescue: loading drivers"
# Twice: a module whose init asks for another by name (the kernel cannot
# call modprobe here) loads on the second pass. Drivers for hardware that is
# not there (Hyper-V, a CPU feature) fail both times, silently.
for pass in 1 2; do
    while read -r name; do
        [ -d "/sys/module/$name" ] || insmod "/lib/modules/rescue/$name.ko" 2>/dev/null
    done </etc/rescue/modules
done
ip link set lo up
for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    udhcpc -b -i "$name" -t 4 -T 2 -s /etc/rescue/udhcpc.sh >/dev/null 2>&1
done
exec /bin/busybox init
