#!/usr/bin/env python3
"""Open N idle AMQP 1.0 connections to HOST:PORT and hold them, for scripts/bench-vs-proton.sh (issue #18).

    idle-connections.py HOST PORT N

Each connection does SASL ANONYMOUS (what both Proton C's broker and ours offer), then sends the AMQP header
and an `open` (no idle-timeout, so the broker owes it no heartbeats), waits for the broker's `open`, and then
sits idle. Connections are opened one after another, so a small listen backlog (Proton C's broker uses 16)
is never overrun. Prints `open N` once all N are open and then waits until it is killed; or, at the first
connection that fails, `failed after K: REASON` and exits with status 1, so the caller never mistakes a
partial set for N connections.

Only the standard library: raw sockets and hand-encoded frames.
"""
import resource
import signal
import socket
import struct
import sys

SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"


def frame(frame_type, body):
    # size, doff 2 (8-byte header), type (0 AMQP, 1 SASL), channel 0
    return struct.pack(">IBBH", 8 + len(body), 2, frame_type, 0) + body


def described_list(code, fields):
    payload = b"".join(fields)
    # list8: constructor 0xc0, size (count byte + fields), count
    return b"\x00\x53" + bytes([code]) + b"\xc0" + bytes([len(payload) + 1, len(fields)]) + payload


def sym8(s):
    b = s.encode()
    return b"\xa3" + bytes([len(b)]) + b


def str8(s):
    b = s.encode()
    return b"\xa1" + bytes([len(b)]) + b


SASL_INIT = frame(1, described_list(0x41, [sym8("ANONYMOUS")]))


def open_frame(i):
    return frame(0, described_list(0x10, [str8("idle-%d" % i)]))


class Reader:
    """Reads a protocol header, then frames, from a blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def header(self, expected):
        got = self.need(8)
        if got != expected:
            raise ConnectionError("unexpected protocol header %r" % got)

    def until(self, code):
        """Skips frames until one whose performative has descriptor `code`; returns its body."""
        while True:
            size, doff, _type, _channel = struct.unpack(">IBBH", self.need(8))
            rest = self.need(size - 8)
            body = rest[doff * 4 - 8:]
            if len(body) >= 3 and body[0] == 0 and body[1] == 0x53:
                if body[2] == code:
                    return body
                if body[2] == 0x18:  # close
                    raise ConnectionError("the broker sent close")


def connect(host, port, i):
    s = socket.create_connection((host, port), timeout=10)
    r = Reader(s)
    s.sendall(SASL_HEADER)
    r.header(SASL_HEADER)
    r.until(0x40)  # sasl-mechanisms
    s.sendall(SASL_INIT)
    outcome = r.until(0x44)  # sasl-outcome: list, then the code (ubyte 0x50 0)
    if b"\x50\x00" not in outcome[3:8]:
        raise ConnectionError("SASL ANONYMOUS refused")
    s.sendall(AMQP_HEADER + open_frame(i))
    r.header(AMQP_HEADER)
    r.until(0x10)  # open
    s.settimeout(None)
    return s


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print("failed after 0: the open-files limit is %d, %d needed" % (hard, want), flush=True)
            return 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held = []
    for i in range(n):
        try:
            held.append(connect(host, port, i))
        except (OSError, ConnectionError) as e:
            print("failed after %d: %s" % (len(held), e), flush=True)
            return 1
    print("open %d" % len(held), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
