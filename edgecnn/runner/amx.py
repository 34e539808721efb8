"""Intel AMX for the runtimes of a runner process: left on (their default) or denied (EDGECNN_AMX=off).

On an x86 CPU with AMX (Sapphire Rapids and later), XNNPACK, LiteRT's CPU delegate, asks Linux for the
AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) and then runs int8 convolutions on
AMX tiles. For the small layers of edge models that is slower than its AVX512-VNNI kernels. On a Xeon
with AMX (1 thread, interleaved p50), the demo mobilenet_v1 int8 took 0.42 ms with AMX and 0.27 ms
without (fp32: 0.29 ms), and yolo_lite int8 3.0 vs 1.8 ms. For larger layers AMX wins: full-size
MobileNetV2 int8 3.55 vs 3.73 ms, nudenet's YOLOv8n 320 int8 5.60 vs 7.18 ms. So AMX is denied only when
asked. No runtime has a switch for it, so the runner makes that permission request fail (EPERM, as on a
kernel that does not offer AMX) with a seccomp filter on arch_prctl, installed before any runtime starts;
XNNPACK then picks its non-AMX kernels (onnxruntime's int8 times did not change either way). Only this
process and its children are affected, and nothing else is filtered.

Standard library only: this runs on the board too, where it does nothing (not x86, or no AMX).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from pathlib import Path

ENV = "EDGECNN_AMX"  # "off": deny AMX to this process's runtimes; anything else, or unset: their default

_SYS_ARCH_PRCTL = 158  # x86_64
_SYS_SECCOMP = 317  # x86_64
_ARCH_REQ_XCOMP_PERM = 0x1023
_ARCH_GET_XCOMP_PERM = 0x1022
XFEATURE_XTILEDATA = 18
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1  # every thread of the process, including those a library already started
_EPERM = 1

_denied = False


def cpu_has_amx() -> bool:
    """True on an x86_64 Linux whose CPU lists AMX int8 (what XNNPACK's int8 kernels would use)."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return False
    return "amx_int8" in flags and "amx_tile" in flags


def _filter() -> bytes:
    """Classic BPF: arch_prctl(ARCH_REQ_XCOMP_PERM, ...) fails with EPERM; every other call is allowed."""
    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, deny = 0x7FFF0000, 0x00050000 | _EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    # struct seccomp_data: nr at 0, arch at 4, args[0] (low word on little-endian) at 16
    program = [
        (ld, 0, 0, 4), (jeq, 0, 5, _AUDIT_ARCH_X86_64),  # another ABI (x32, i386): allow
        (ld, 0, 0, 0), (jeq, 0, 3, _SYS_ARCH_PRCTL),
        (ld, 0, 0, 16), (jeq, 0, 1, _ARCH_REQ_XCOMP_PERM),
        (ret, 0, 0, deny),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def deny() -> None:
    """Make every later AMX permission request of this process fail; OSError where Linux refuses the filter.

    A permission already granted stays granted, so this must run before any runtime is loaded.
    """
    global _denied
    if _denied:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    code = ctypes.create_string_buffer(_filter())

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code.raw) // 8, ctypes.cast(code, ctypes.c_void_p))
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")
    _denied = True


def tile_permission() -> bool | None:
    """Whether this process holds the AMX tile permission now (None where that cannot be asked)."""
    if not cpu_has_amx():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    mask = ctypes.c_ulong(0)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_XCOMP_PERM, ctypes.byref(mask)) != 0:
        return None
    return bool(mask.value & (1 << XFEATURE_XTILEDATA))


def apply_policy() -> str | None:
    """Act on EDGECNN_AMX at a runner's start: "on", "off" (denied here) or None (this CPU has no AMX).

    An `Error:`-worthy refusal (the kernel would not take the filter) raises ToolError.
    """
    if not cpu_has_amx():
        return None
    if os.environ.get(ENV, "").strip().lower() != "off":
        return "on"
    try:
        deny()
    except OSError as e:
        from edgecnn.errors import ToolError

        raise ToolError(f"{ENV}=off: could not deny AMX to this process ({e.strerror or e})") from None
    return "off"


def state() -> str | None:
    """This process's AMX policy as the JSON reports it: "on", "off" or None (no AMX on this CPU)."""
    if not cpu_has_amx():
        return None
    return "off" if _denied else "on"
