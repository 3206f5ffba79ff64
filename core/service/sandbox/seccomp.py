"""A seccomp filter for the sandbox (core.service.sandbox.runner), as the classic BPF program
bubblewrap's
`--seccomp FD` loads: a second wall behind the namespaces that shrinks the kernel a user's
model can reach.

It refuses with EPERM the system calls that a model never needs and that escapes are made of:
tracing other processes, reading their memory, (un)mounting, new namespaces, kernel keyrings,
BPF, perf events, userfaultfd, io_uring, module loading, reboot, swap, open-by-handle. Sockets
may only be Unix sockets (the namespaces leave no network anyway). clone3 answers ENOSYS, so
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
_AF_UNIX = 1
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000
_CLONE_NEW_NAMESPACES |= 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

_REFUSED = (
    "ptrace process_vm_readv process_vm_writev mount umount2 pivot_root unshare setns "
    "keyctl add_key request_key bpf perf_event_open userfaultfd io_uring_setup io_uring_enter "
    "io_uring_register kexec_load init_module finit_module delete_module reboot swapon swapoff "
    "open_by_handle_at name_to_handle_at"
).split()

# The architectures we know the system call numbers of: audit arch, numbers by name.
_ARCHITECTURES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165,
            "umount2": 166, "pivot_root": 155, "unshare": 272, "setns": 308, "keyctl": 250,
            "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
            "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "kexec_load": 246, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
            "swapoff": 168, "open_by_handle_at": 304, "name_to_handle_at": 303,
            "socket": 41, "clone": 56, "clone3": 435,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40,
            "umount2": 39, "pivot_root": 41, "unshare": 97, "setns": 268, "keyctl": 219,
            "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
            "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "kexec_load": 104, "init_module": 105,
            "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
            "swapoff": 225, "open_by_handle_at": 265, "name_to_handle_at": 264,
            "socket": 198, "clone": 220, "clone3": 435,
        },
    ),
}  # fmt: skip


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def filter_program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, or None where we do not know its numbers."""
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
    # socket(family, ...): only AF_UNIX. clone(flags, ...): no CLONE_NEW* flag.
    program += [
        _op(_JEQ, numbers["socket"], jf=3),
        _op(_LOAD, _ARG0),
        _op(_JEQ, _AF_UNIX, jt=1),
        _op(_RET, _ERRNO | errno.EAFNOSUPPORT),
        _op(_LOAD, _NR),
        _op(_JEQ, numbers["clone"], jf=3),
        _op(_LOAD, _ARG0),
        _op(_JSET, _CLONE_NEW_NAMESPACES, jf=1),
        refuse,
        _op(_RET, _ALLOW),
    ]
    return b"".join(program)


def filter_file_descriptor(machine: str | None = None) -> int | None:
    """An open file (memfd) holding the filter, positioned at its start, for `--seccomp FD`;
    the caller closes it once the sandbox has started. None where no filter is known."""
    program = filter_program(machine)
    if program is None:
        return None
    fd = os.memfd_create("robustify-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
