"""The worker zygote: a fork server that fleet-node starts once per node.

It imports what every worker needs, then forks a worker per request from
fleet-node, so a worker starts in a few milliseconds and shares the imported
modules' memory. The protocol (one message per SOCK_SEQPACKET packet on fd 3)
is described in cpp/src/node/zygote.h. It creates no threads: forking a
process with threads is unsafe.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys


def main() -> None:
    sock = socket.socket(fileno=3)
    # What a worker imports anyway, imported once here.
    import ctypes
    import pickle  # noqa: F401

    from fleet._private import serialization, worker_main  # noqa: F401

    serialization._cp()  # cloudpickle
    libc = ctypes.CDLL(None, use_errno=True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    zygote_pid = os.getpid()
    sock.send(b"R")

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            sock.send(b"X" + struct.pack("<ii", pid, status))

    def spawn(env_blob: bytes, fds: list) -> None:
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            sock.send(b"E" + str(e).encode())
            return
        if pid == 0:  # the worker
            try:
                sock.close()
                signal.set_wakeup_fd(-1)
                os.close(wake_r)
                os.close(wake_w)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the zygote
                if os.getppid() != zygote_pid:  # it died before prctl
                    os._exit(1)
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                for fd in fds:
                    os.close(fd)
                for item in env_blob.split(b"\0"):
                    if item:
                        k, _, v = item.partition(b"=")
                        os.environb[k] = v
                import random

                random.seed()  # not the zygote's sequence in every worker
                worker_main.main()
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        sock.send(b"P" + struct.pack("<i", pid))

    while True:
        try:
            readable, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            reap()
        if sock in readable:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
            if not msg:  # fleet-node is gone
                os._exit(0)
            if msg[:1] == b"S" and len(fds) == 2:
                spawn(msg[1:], fds)
            else:
                for fd in fds:
                    os.close(fd)
                sock.send(b"E" + b"malformed request")
            reap()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
