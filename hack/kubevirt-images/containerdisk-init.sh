#!/bin/busybox sh
# /init of the Fedora-like containerDisk's initramfs (src/slirp_conformance/kubevirt_images/containerdisk.py):
# the reference guest's tiny initramfs (fedora_like_init.sh), except that the root file system is
# a partition of a bootable disk, named by root= on the kernel command line (GRUB's grub.cfg).
# busybox ash, checked as the dash dialect it follows:
# shellcheck shell=dash
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m.ko" || echo "initramfs: insmod $m failed"; done </etc/modules-load
root=/dev/vda
read -r cmdline </proc/cmdline
for arg in $cmdline; do
    case "$arg" in root=*) root="${arg#root=}" ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 200 ]; do usleep 50000; i=$((i + 1)); done
if ! mount -t ext4 -o rw,noatime "$root" /newroot; then
    echo "initramfs: cannot mount the root file system $root"; ls /dev; poweroff -f
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
