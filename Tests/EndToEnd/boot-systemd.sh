#!/bin/bash
# Boots systemd as PID 1 of the namespaces this script runs in (unshare --pid --mount --cgroup
# --fork), on a root of its own so nothing it does reaches the machine's files:
#   /usr (and /opt, for a debug build's Swift runtime) read-only from the machine, with
#   /usr/local replaced by the staged install;
#   /etc a copy (sysusers may add the jobrunner group to it); /var, /tmp, /run, /dev on tmpfs;
#   /proc/sys and /sys read-only; the cgroup2 hierarchy as this cgroup namespace sees it.
# Usage: boot-systemd.sh ROOT DESTDIR SHARE   (SHARE appears as /e2e inside)
set -euo pipefail
root=$1 dest=$2 share=$3

mount --make-rprivate /
mount -t tmpfs -o mode=0755 e2e-root "$root"
mkdir -p "$root"/{usr,etc,var/lib,var/log,var/tmp,var/cache,tmp,run,proc,sys,dev,root,e2e,oldroot}
chmod 1777 "$root/tmp" "$root/var/tmp"
for link in bin sbin lib lib64; do
    if [ -L "/$link" ]; then
        ln -s "$(readlink "/$link")" "$root/$link"
    elif [ -d "/$link" ]; then
        mkdir -p "$root/$link"
        mount --rbind "/$link" "$root/$link"
        mount -o remount,bind,ro "$root/$link"
    fi
done
mount --rbind /usr "$root/usr"
mount -o remount,bind,ro "$root/usr"
# A debug build finds the Swift runtime in its toolchain (RUNPATH), often under /opt.
if [ -d /opt ]; then
    mkdir -p "$root/opt"
    mount --rbind /opt "$root/opt"
    mount -o remount,bind,ro "$root/opt"
fi
mount --bind "$dest/usr/local" "$root/usr/local"
cp -a /etc/. "$root/etc/"
rm -rf "$root/etc/jobrunner"
cp -a "$dest/etc/jobrunner" "$root/etc/jobrunner"
mount --bind "$share" "$root/e2e"

mount -t proc proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"

mount -t tmpfs -o mode=0755,nosuid e2e-dev "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
touch "$root/dev/console"
mount --bind /dev/null "$root/dev/console"
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

# /run must be a mount point already, or systemd mounts a fresh tmpfs over what is written here.
mount -t tmpfs -o mode=0755,nosuid,nodev e2e-run "$root/run"
# Nothing starts but what the test asks for.
mkdir -p "$root/run/systemd/system"
cat > "$root/run/systemd/system/e2e.target" <<'UNIT'
[Unit]
Description=jobrunner end-to-end tests
DefaultDependencies=no
UNIT

cd "$root"
pivot_root . oldroot
umount -l /oldroot
rmdir /oldroot
exec env -i container=jobrunner-e2e PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd --system --unit=e2e.target
