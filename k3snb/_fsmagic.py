"""Filesystem magic numbers (statfs ``f_type``, linux/magic.h): one table for probing, tracing and the system module.

No imports on purpose: the tracer loads it at start-up.
"""

from __future__ import annotations

# f_type -> the name the kit reports
FS_MAGIC: dict[int, str] = {
    0x01021997: "9p",
    0x794C7630: "overlay",
    0xEF53: "ext4",
    0x01021994: "tmpfs",
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x1CD1: "devpts",
    0x65735546: "fuse",
    0x6969: "nfs",
    0x73717368: "squashfs",
    0x858458F6: "ramfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0xCAFE4A11: "bpf",
    0x19800202: "mqueue",
    0x42494E4D: "binfmt_misc",
    0x73636673: "securityfs",
    0x6E736673: "nsfs",
    0xF2F52010: "f2fs",
}
# other names people use for the same magic (ext2/ext3 share ext4's; v9fs is the kernel's 9p)
ALIASES: dict[str, str] = {"ext2": "ext4", "ext3": "ext4", "v9fs": "9p"}
# name (or alias) -> f_type
BY_NAME: dict[str, int] = {v: k for k, v in FS_MAGIC.items()}
BY_NAME.update({a: BY_NAME[n] for a, n in ALIASES.items()})
