"""Shared parts of the python-qpid-proton peers used by nucleon's engine interop tests.

``integration-tests/tests/engine_interop.rs`` runs ``client_send.py`` and ``client_recv.py`` with Debian's
``/usr/bin/python3`` (Proton 0.37) against a nucleon engine that listens on 127.0.0.1. This module holds:

* ``message(i)``: the type-rich test message number ``i``.  The Rust test builds the very same message in
  ``rich_message(i)``; each side checks what it receives against its own definition, so the two definitions
  are cross-checked in both directions.
* ``expected(i)``: ``message(i)`` as Proton decodes its own encoding, for strictly typed comparison with
  ``corpus.message_diffs`` (the codec cross-check's comparison, reused).
* ``add_common_args`` / ``connect_kwargs``: the command-line options both clients share (SASL, idle timeout).
* ``Peer``: a ``MessagingHandler`` base class that reports every error, stops on a global timeout, and ends
  the process with a meaningful exit status.

Output is line-oriented and flushed at once, so the Rust test can show it when something fails.
"""

import argparse
import sys
import uuid

from proton import (Array, Data, Described, Message, UNDESCRIBED, char, decimal32, decimal64, decimal128,
                    int32, short, symbol, timestamp, ubyte, uint, ulong, ushort)
from proton import byte as pbyte
from proton.handlers import MessagingHandler

from corpus import f32, message_diffs

D32_ONE = decimal32(0x32800001)
D64_ONE = decimal64(0x31C0000000000001)
D128_ONE = decimal128(bytes.fromhex("30400000000000000000000000000001"))
U2 = uuid.UUID("f81d4fae-7dec-11d0-a765-00a0c91e6bf6")


def out(*parts):
    print(*parts, flush=True)


def message(i):
    """Test message ``i``: every header and properties field, application properties of every scalar type,
    annotations, and a map body with nested lists, maps, arrays and described values.  Keep in sync with
    ``rich_message`` in engine_interop.rs (same content, same map order)."""
    body = {
        "index": i,
        "text": "message %d \u00e9\u4e2d" % i,
        "list": [int32(i), "two", [symbol("three"), None, True]],
        "ints": Array(UNDESCRIBED, Data.INT, int32(1), int32(-2), int32(i)),
        "names": Array(symbol("com.example:names"), Data.STRING, "a", "bb"),
        "point": Described(symbol("com.example:point"), [1.5, -2.5]),
        "coded": Described(ulong(0x0000013700000001), {"k": uint(i)}),
        "nested": {symbol("deep"): {"deeper": [ulong(2 ** 64 - 1), timestamp(1700000000000)]}},
        "binary": bytes(range(i % 64)),
        "empty_list": [],
        "empty_map": {},
    }
    properties = {
        "index": i,
        "null": None,
        "bool": True,
        "ubyte": ubyte(200),
        "ushort": ushort(60000),
        "uint": uint(4000000000),
        "ulong": ulong(2 ** 40 + i),
        "byte": pbyte(-100),
        "short": short(-30000),
        "int": int32(-2000000000),
        "long": -(2 ** 40),
        "float": f32(1.5),
        "double": 2.25,
        "decimal32": D32_ONE,
        "decimal64": D64_ONE,
        "decimal128": D128_ONE,
        "char": char("\u20ac"),
        "timestamp": timestamp(1311704463521),
        "uuid": U2,
        "binary": b"\x00\x01\xfe\xff",
        "string": "text \u00e9",
        "symbol": symbol("sym:bol"),
    }
    return Message(
        body=body,
        durable=True,
        priority=7,
        ttl=1.5,
        first_acquirer=True,
        delivery_count=2,
        id=1000 + i,
        user_id=b"nucleon",
        address="interop",
        subject="subject %d" % i,
        reply_to="reply",
        correlation_id=uuid.UUID(int=i + 1),
        content_type="application/x-nucleon",
        content_encoding="identity",
        expiry_time=1700000001.5,
        creation_time=1700000000.25,
        group_id="group",
        group_sequence=i + 1,
        reply_to_group_id="reply-group",
        properties=properties,
        instructions={symbol("x-opt-hop"): "nucleon"},
        annotations={symbol("x-opt-index"): uint(i), symbol("x-opt-list"): [1, symbol("two")]},
    )


def expected(i):
    """``message(i)`` as Proton decodes its own encoding of it (the reference for typed comparison)."""
    decoded = Message()
    decoded.decode(message(i).encode())
    return decoded


def large_body(size):
    """The data section of a large test message: bytes 0..250 repeated (251 is prime, so no frame size lines
    up with the pattern and a misplaced frame shows).  ``large_body`` in engine_interop.rs is the same."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def diffs(i, got):
    return message_diffs(expected(i), got)


def add_common_args(parser):
    parser.add_argument("url", help="amqp://127.0.0.1:PORT")
    parser.add_argument("address")
    parser.add_argument("count", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--mechs", default="ANONYMOUS", help="allowed SASL mechanisms (space-separated)")
    parser.add_argument("--max-frame", type=int, help="our max-frame-size in bytes")
    parser.add_argument("--idle-timeout", type=float, help="our idle timeout in seconds (Proton's heartbeat)")
    parser.add_argument("--quiet", type=float, default=0.0,
                        help="after the connection opens, stay quiet this many seconds before attaching")
    parser.add_argument("--expect-auth-failure", action="store_true",
                        help="succeed only if SASL authentication is refused")
    parser.add_argument("--timeout", type=float, default=20.0, help="give up after this many seconds")
    parser.add_argument("--tls-ca", help="for amqps: trust the CA certificates in this PEM file (and check the name)")
    parser.add_argument("--tls-cert", help="for amqps: present this certificate (PEM; needs --tls-key)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")


def parse(description, add_args=None, argv=None):
    parser = argparse.ArgumentParser(description=description)
    add_common_args(parser)
    if add_args:
        add_args(parser)
    return parser.parse_args(argv)


def connect_kwargs(args):
    kw = dict(reconnect=False, sasl_enabled=True, allowed_mechs=args.mechs, allow_insecure_mechs=True)
    if args.user is not None:
        kw["user"] = args.user
        kw["password"] = args.password or ""
    if args.idle_timeout:
        kw["heartbeat"] = args.idle_timeout
    if args.max_frame:
        kw["max_frame_size"] = args.max_frame
    if args.tls_ca:
        from proton import SSLDomain
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(args.tls_ca)
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, args.tls_ca)
        if args.tls_cert:
            domain.set_credentials(args.tls_cert, args.tls_key, None)
        kw["ssl_domain"] = domain
    return kw


class _Call:
    def __init__(self, fn):
        self.fn = fn

    def on_timer_task(self, event):
        self.fn()


class Peer(MessagingHandler):
    """Connects, calls ``start_links(connection)`` once the connection is open (after ``--quiet`` seconds),
    and records the outcome.  Subclasses set ``self.finished = True`` when they have done their job and
    close the connection.  ``exit_status()`` is 0 only for a clean, complete run."""

    def __init__(self, args, **kw):
        super().__init__(**kw)
        self.args = args
        self.finished = False
        self.failed = False
        self.auth_failed = False
        self.timed_out = False
        self.container = None
        self.connection = None

    def on_start(self, event):
        self.container = event.container
        self.timeout_task = event.container.schedule(self.args.timeout, _Call(self._timeout))
        self.connection = event.container.connect(self.args.url, **connect_kwargs(self.args))

    def _timeout(self):
        self.timed_out = True
        out("error: timed out after %.1f s" % self.args.timeout)
        if self.connection is not None:
            self.connection.close()
        self.container.stop()

    def on_connection_opened(self, event):
        remote = event.connection.transport.remote_idle_timeout
        out("opened remote-idle-timeout=%s" % remote)
        if self.args.quiet > 0:
            out("quiet for %.1f s" % self.args.quiet)
            self.container.schedule(self.args.quiet, _Call(lambda: self._start(event.connection)))
        else:
            self._start(event.connection)

    def _start(self, connection):
        out("attaching")
        self.start_links(connection)

    def start_links(self, connection):
        raise NotImplementedError

    def finish(self, connection):
        self.finished = True
        connection.close()

    def on_connection_closed(self, event):
        out("closed")
        self.timeout_task.cancel()

    def on_transport_error(self, event):
        cond = event.transport.condition
        name = cond.name if cond else None
        desc = cond.description if cond else None
        if name == "amqp:unauthorized-access":
            self.auth_failed = True
            out("auth-failed %s %s" % (name, desc))
        else:
            self.failed = True
            out("error: transport %s %s" % (name, desc))
        self.timeout_task.cancel()

    def on_transport_closed(self, event):
        self.timeout_task.cancel()
        # The work is done. Stop at once: otherwise the reactor notices that nothing is left only when its
        # 3.14 s select timeout expires.
        self.container.stop()

    def _endpoint_error(self, what, endpoint):
        self.failed = True
        cond = endpoint.remote_condition
        out("error: %s %s %s" % (what, cond.name if cond else None, cond.description if cond else None))

    def on_connection_error(self, event):
        self._endpoint_error("connection", event.connection)
        event.connection.close()

    def on_session_error(self, event):
        self._endpoint_error("session", event.session)
        event.connection.close()

    def on_link_error(self, event):
        self._endpoint_error("link", event.link)
        event.connection.close()

    def exit_status(self):
        if self.args.expect_auth_failure:
            return 0 if self.auth_failed and not self.finished else 1
        return 0 if self.finished and not (self.failed or self.timed_out or self.auth_failed) else 1


def run(handler):
    from proton.reactor import Container
    try:
        Container(handler).run()
    except Exception as e:  # report, never hang or pass silently
        out("error: exception %r" % (e,))
        return 1
    status = handler.exit_status()
    out("exit %d" % status)
    return status


def fail_usage(msg):
    print(msg, file=sys.stderr)
    sys.exit(2)
