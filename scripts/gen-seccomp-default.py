#!/usr/bin/env python3
"""Writes data/seccomp-default.json, skiff's default seccomp profile in docker's JSON
format, from the x86_64 syscall table (src/runtime/seccomp/x86_64.rs).

Docker's semantics: an allow-list (anything not listed fails with EPERM); clone3 fails
with ENOSYS so libc falls back to clone; calls that need a capability are allowed only
when the container has it (`includes.caps`); namespace-creating clone flags only with
CAP_SYS_ADMIN. Run it again when the syscall table grows, and review the new names.
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
table = open(os.path.join(ROOT, "src/runtime/seccomp/x86_64.rs")).read()
names = set(re.findall(r'\("([a-z0-9_]+)", \d+\)', table))

# Never allowed: not namespaced, obsolete, unimplemented, or a large attack surface.
DENIED = {
    "_sysctl", "add_key", "afs_syscall", "create_module", "epoll_ctl_old",
    "epoll_wait_old", "get_kernel_syms", "getpmsg", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "modify_ldt", "nfsservctl", "putpmsg", "query_module",
    "request_key", "security", "sysfs", "tuxcall", "uselib", "userfaultfd", "ustat",
    "vserver",
}
# Allowed only with a capability.
BY_CAP = {
    "CAP_SYS_ADMIN": [
        "bpf", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
        "open_tree_attr", "perf_event_open", "pivot_root", "quotactl", "quotactl_fd",
        "setns", "swapoff", "swapon", "umount2", "unshare",
    ],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "finit_module", "init_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise"],
    "CAP_SYS_RAWIO": ["ioperm", "iopl"],
    "CAP_SYS_TIME": ["clock_adjtime", "clock_settime", "settimeofday"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["mbind", "migrate_pages", "move_pages", "set_mempolicy",
                     "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}
# Allowed with conditions on their arguments (rules below).
SPECIAL = {"clone", "clone3", "personality"}

conditional = {n for ns in BY_CAP.values() for n in ns}
unknown = (DENIED | conditional | SPECIAL) - names
assert not unknown, unknown
allowed = sorted(names - DENIED - conditional - SPECIAL)

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

syscalls = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
# personality: only the harmless personas (as docker).
for v in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
    syscalls.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
syscalls.append({
    "comment": "clone without namespace flags, unless CAP_SYS_ADMIN",
    "names": ["clone"], "action": "SCMP_ACT_ALLOW",
    "args": [{"index": 0, "value": NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
    "excludes": {"caps": ["CAP_SYS_ADMIN"]},
})
syscalls.append({
    "comment": "clone3's flags are in memory a filter cannot read: ENOSYS makes libc use clone",
    "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
    "excludes": {"caps": ["CAP_SYS_ADMIN"]},
})
syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_ADMIN"]}})
for cap, ns in BY_CAP.items():
    syscalls.append({"names": sorted(ns), "action": "SCMP_ACT_ALLOW",
                     "includes": {"caps": [cap]}})

profile = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": syscalls,
}
with open(os.path.join(ROOT, "data/seccomp-default.json"), "w") as f:
    json.dump(profile, f, indent=1)
    f.write("\n")
print(f"{len(allowed)} always allowed, {len(conditional)} with a capability, {len(DENIED)} denied")
