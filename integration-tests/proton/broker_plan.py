"""The message plan shared by ``broker_send.py`` and ``broker_recv.py``, the python-qpid-proton peers that
``integration-tests/tests/broker_interop.rs`` runs through nucleon's in-process broker.

Message ``i`` of a run is ``interop.message(i)`` (the type-rich test message), except for the indexes named
with ``--large-at I`` (repeatable), which are large messages: a single data section of
``interop.large_body(SIZE)`` (``--large SIZE``), message-id ``1000 + i`` and application property
``index = i``.  The receiver compares each message it gets with the plan, strictly typed.
"""

from proton import Message

import interop


def add_plan_args(parser):
    parser.add_argument("--large", type=int, default=5 * 1024 * 1024,
                        help="the size of the large messages' data section in bytes (default 5 MiB)")
    parser.add_argument("--large-at", type=int, action="append", default=[],
                        help="message I is a large message (repeatable)")


def is_large(i, args):
    return i in args.large_at


def planned(i, args):
    """Message ``i`` of the plan, as sent.  The broker honours expiry and priority, so the rich message gets a
    ttl of an hour and an absolute-expiry-time in 2100 (its own would expire in the queue), and the large
    ones its priority, 7 (with the default, 4, they would wait behind every rich message)."""
    if is_large(i, args):
        # inferred=True: a bytes body is a data section (not an amqp-value holding binary).
        return Message(id=1000 + i, durable=True, priority=7, inferred=True,
                       body=interop.large_body(args.large), properties={"index": i})
    m = interop.message(i)
    m.ttl = 3600.0
    m.expiry_time = 4102444800.0
    return m


def expected(i, args):
    """Message ``i`` of the plan as Proton decodes its own encoding of it (the reference for comparison)."""
    decoded = Message()
    decoded.decode(planned(i, args).encode())
    return decoded
