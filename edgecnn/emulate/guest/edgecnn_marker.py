"""Guest side of the instruction counter: bracket a region with marker syscalls.

Runs inside the aarch64 guest, so it imports nothing but the standard library.
The numbers must equal those in edgecnn/emulate/insn_count.c. Outside qemu (or
without the plugin) the syscall just fails with ENOSYS and nothing happens.
"""

import ctypes

MARKER_NR = 0x7EC0
MARKER_MAGIC = 0x0EDC00C0DE000001
START, STOP, WARM = 1, 2, 3

_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong]


def start() -> None:
    """Begin counting the calling thread's instructions."""
    _syscall(MARKER_NR, MARKER_MAGIC, START)


def stop() -> None:
    """End the region; the plugin writes its count."""
    _syscall(MARKER_NR, MARKER_MAGIC, STOP)


def warm() -> None:
    """Start instrumenting (a profile run with start=warm skips the start-up until this): send before warm-up."""
    _syscall(MARKER_NR, MARKER_MAGIC, WARM)
