#!/usr/bin/env python3
"""Writes a directory tree as an initramfs: a cpio archive in the "newc" format the kernel
unpacks into its first root file system.

    initramfs.py ROOT OUTPUT
"""
import os
import stat
import sys


def header(inode, mode, nlink, size, name_length, rdev_major=0, rdev_minor=0):
    fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_length, 0]
    return b"070701" + b"".join(b"%08X" % value for value in fields)


def pad(out, length):
    out.write(b"\0" * ((4 - length % 4) % 4))


def entry(out, inode, name, mode, data=b"", nlink=1):
    encoded = name.encode() + b"\0"
    head = header(inode, mode, nlink, len(data), len(encoded))
    out.write(head + encoded)
    pad(out, len(head) + len(encoded))
    out.write(data)
    pad(out, len(data))


def main():
    root, output = sys.argv[1], sys.argv[2]
    inode = 1
    with open(output, "wb") as out:
        for directory, subdirectories, files in os.walk(root):
            subdirectories.sort()
            relative = os.path.relpath(directory, root)
            if relative != ".":
                entry(out, inode, relative, stat.S_IFDIR | 0o755, nlink=2)
                inode += 1
            for name in sorted(files):
                path = os.path.join(directory, name)
                archived = os.path.normpath(os.path.join(relative, name))
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    entry(out, inode, archived, stat.S_IFLNK | 0o777, os.readlink(path).encode())
                else:
                    with open(path, "rb") as f:
                        entry(out, inode, archived, stat.S_IFREG | stat.S_IMODE(info.st_mode), f.read())
                inode += 1
        entry(out, 0, "TRAILER!!!", 0)


if __name__ == "__main__":
    main()
