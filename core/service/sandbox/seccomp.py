"""A seccomp filter for the sandbox (core.service.sandbox.runner), as the classic BPF program
bubblewrap's `--seccomp FD` loads: a second wall behind the namespaces that shrinks the kernel
a user's model can reach.

It refuses with EPERM the system calls that a model never needs and that escapes are made of:
tracing other processes, reading their memory, (un)mounting, new namespaces, kernel keyrings,
BPF, perf events, userfaultfd, io_uring, module loading, reboot, swap, open-by-handle. Sockets
may only be Unix sockets (the namespaces leave no network anyway); a job of several processes
(torchrun) may also open inet and netlink sockets, which its rendezvous and gloo need on the
sandbox's own loopback. clone3 answers ENOSYS, so
the C library falls back to clone, whose flags the filter can see: no new namespaces there
either. Another architecture than the process's own is killed.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0 = 0, 4, 16
# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LOAD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_AF_UNIX, _AF_INET, _AF_NETLINK, _AF_INET6 = 1, 2, 16, 10
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
_CLONE_NEW_NAMESPACES |= 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

_REFUSED = (
    "ptrace process_vm_readv process_vm_writev mount umount2 pivot_root unshare setns "
    "keyctl add_key request_key bpf perf_event_open userfaultfd io_uring_setup io_uring_enter "
    "io_uring_register kexec_load init_module finit_module delete_module reboot swapon swapoff "
    "open_by_handle_at name_to_handle_at"
).split()

# The architectures we know the system call numbers of, by machine: their audit arch, and
# their column of _NUMBERS.
_AUDIT_ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# System call numbers by name: (x86_64, aarch64).
_NUMBERS: dict[str, tuple[int, int]] = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "unshare": (272, 97),
    "setns": (308, 268),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "socket": (41, 198),
    "clone": (56, 220),
    "clone3": (435, 435),
}
_ARCHITECTURES: dict[str, tuple[int, dict[str, int]]] = {
    machine: (audit_arch, {name: pair[column] for name, pair in _NUMBERS.items()})
    for column, (machine, audit_arch) in enumerate(_AUDIT_ARCHES.items())
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def filter_program(machine: str | None = None, *, loopback_sockets: bool = False) -> bytes | None:
    """The filter for this machine's architecture, or None where we do not know its numbers.
    With `loopback_sockets`, inet and netlink sockets too (still inside the network namespace)."""
    known = _ARCHITECTURES.get(machine or platform.machine())
    if known is None:
        return None
    audit_arch, numbers = known
    refuse = _op(_RET, _ERRNO | errno.EPERM)
    program = [
        _op(_LOAD, _ARCH),
        _op(_JEQ, audit_arch, jt=1),
        _op(_RET, _KILL_PROCESS),
        _op(_LOAD, _NR),
    ]
    if audit_arch == 0xC000003E:
        # x32 system calls (bit 30 set) would sidestep the numbers below.
        program += [_op(_JSET, 0x40000000, jf=1), _op(_RET, _KILL_PROCESS)]
    for name in _REFUSED:
        program += [_op(_JEQ, numbers[name], jf=1), refuse]
    program += [_op(_JEQ, numbers["clone3"], jf=1), _op(_RET, _ERRNO | errno.ENOSYS)]
    # socket(family, ...): only these families. clone(flags, ...): no CLONE_NEW* flag.
    families = [_AF_UNIX] + ([_AF_INET, _AF_INET6, _AF_NETLINK] if loopback_sockets else [])
    program += [_op(_JEQ, numbers["socket"], jf=2 + len(families)), _op(_LOAD, _ARG0)]
    # Each match jumps past the remaining matches and the refusal.
    program += [
        _op(_JEQ, family, jt=len(families) - index) for index, family in enumerate(families)
    ]
    program += [
        _op(_RET, _ERRNO | errno.EAFNOSUPPORT),
        _op(_LOAD, _NR),
        _op(_JEQ, numbers["clone"], jf=3),
        _op(_LOAD, _ARG0),
        _op(_JSET, _CLONE_NEW_NAMESPACES, jf=1),
        refuse,
        _op(_RET, _ALLOW),
    ]
    return b"".join(program)


def filter_file_descriptor(
    machine: str | None = None, *, loopback_sockets: bool = False
) -> int | None:
    """An open file (memfd) holding the filter, positioned at its start, for `--seccomp FD`;
    the caller closes it once the sandbox has started. None where no filter is known."""
    program = filter_program(machine, loopback_sockets=loopback_sockets)
    if program is None:
        return None
    fd = os.memfd_create("robustify-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
