#!/usr/bin/python3
"""pyclient.py send|recv URL ADDRESS COUNT [options]: a python-qpid-proton client for nucleon's interop matrix
(integration-tests/tests/interop_proton_python.rs), against our broker or a nucleon listener.

Message ``i`` is a long ``i`` as an ``amqp-value`` body with application property ``index = i``, or, with
``--large SIZE``, a single data section holding ``interop.large_body(SIZE)``.

Besides the lines of ``interop.Peer`` (``opened remote-idle-timeout=SECONDS``, ``attaching``, ``closed``,
``error: ...``, ``auth-failed ...``, ``exit S``), every line it prints is one JSON object:

* ``send``: sends COUNT messages (delivery tag ``str(i)``), unsettled, or pre-settled on an ``AtMostOnce``
  link with ``--presettled``, and prints ``{"index": I, "outcome": O}`` for each, where O is ``presettled``
  (settled by us when sent), ``accepted``, ``released``, ``modified``, or ``rejected`` (with ``condition`` and
  ``description``);
* ``recv``: receives COUNT messages, accepting each, and prints ``{"index": I, "body": BODY}`` for each
  (``BODY`` the long, or with ``--large`` whether it equals the expected data: ``{"index": I, "large":
  true}``). Credit: a window of ``--prefetch N`` (default 10); or, with ``--flow N,M,...``, no window and
  one ``receiver.flow(N)`` at a time, the next once the previous credit is used up (printed as
  ``{"event": "flow", "credit": N}``; a message beyond the credit granted prints ``{"error": ...}``); or,
  with ``--drain N``, no window and one ``receiver.drain(N)`` (``{"event": "drain", "credit": N}``), which
  must come back drained after the COUNT messages: ``{"event": "drained", "credit": C, "drained": D}``
  (the link's credit then, and the credit the sender gave back).

Then it closes the connection. Exits 0 only for a complete,
clean run (or, with ``--expect-auth-failure``, only if SASL authentication was refused). The common options
(SASL, idle timeout, ``--quiet``, ``--max-frame``, ``--timeout``) are ``interop.py``'s. Run with
/usr/bin/python3.
"""

import json
import sys

from proton import Delivery, Link, Message
from proton.reactor import AtMostOnce

import interop


def emit(**fields):
    print(json.dumps(fields), flush=True)


def extra_args(parser):
    parser.add_argument("--large", type=int, help="messages are one data section of interop.large_body(LARGE)")
    parser.add_argument("--presettled", action="store_true", help="send: pre-settled (AtMostOnce link)")
    parser.add_argument("--prefetch", type=int, default=10, help="recv: the credit window")
    parser.add_argument("--flow", help="recv: manual credit, comma-separated grants")
    parser.add_argument("--drain", type=int, help="recv: one drain with this much credit")


def message(i, args):
    if args.large is not None:
        return Message(inferred=True, body=interop.large_body(args.large), properties={"index": i})
    return Message(body=i, properties={"index": i})


class Client(interop.Peer):
    def __init__(self, args):
        manual = args.flow is not None or args.drain is not None
        super().__init__(args, prefetch=0 if manual else args.prefetch, auto_accept=True, auto_settle=True)
        self.sent = 0
        self.outcomes = 0
        self.received = 0
        self.granted = 0
        self.grants = [int(n) for n in args.flow.split(",")] if args.flow else []
        self.drained = False
        self.link = None

    def start_links(self, connection):
        if self.args.mode == "send":
            options = [AtMostOnce()] if self.args.presettled else None
            self.link = self.container.create_sender(connection, self.args.address, options=options)
        else:
            self.link = self.container.create_receiver(connection, self.args.address)

    def on_link_opened(self, event):
        if self.args.mode != "recv" or event.link != self.link:
            return
        if self.grants:
            self.grant()
        elif self.args.drain is not None:
            self.granted += self.args.drain
            emit(event="drain", credit=self.args.drain)
            event.receiver.drain(self.args.drain)

    def grant(self):
        n = self.grants.pop(0)
        self.granted += n
        emit(event="flow", credit=n)
        self.link.flow(n)

    # send

    def on_sendable(self, event):
        while event.sender.credit > 0 and self.sent < self.args.count:
            i = self.sent
            event.sender.send(message(i, self.args), tag=str(i))
            self.sent += 1
            if self.args.presettled:
                # Message.send settles the delivery as it sends it when the link is SND_SETTLED; the
                # peer's attach must have agreed to that mode.
                modes = (event.sender.snd_settle_mode, event.sender.remote_snd_settle_mode)
                settled = modes == (Link.SND_SETTLED, Link.SND_SETTLED)
                self.outcome(i, "presettled" if settled else "not pre-settled: modes %r" % (modes,))

    def outcome(self, i, outcome, **more):
        emit(index=i, outcome=outcome, **more)
        self.outcomes += 1
        if self.outcomes == self.args.count:
            self.finish(self.connection)

    def on_accepted(self, event):
        self.outcome(int(event.delivery.tag), "accepted")

    def on_rejected(self, event):
        cond = event.delivery.remote.condition
        self.outcome(int(event.delivery.tag), "rejected", condition=cond.name if cond else None,
                     description=cond.description if cond else None)

    def on_released(self, event):
        modified = event.delivery.remote_state == Delivery.MODIFIED
        self.outcome(int(event.delivery.tag), "modified" if modified else "released")

    # recv

    def on_message(self, event):
        i = self.received
        self.received += 1
        if (self.args.flow is not None or self.args.drain is not None) and self.received > self.granted:
            self.failed = True
            emit(error="message %d beyond the %d credits granted" % (i, self.granted))
        if self.drained:
            self.failed = True
            emit(error="message %d after the drain completed" % i)
        if self.args.large is not None:
            body = event.message.body
            emit(index=i, large=isinstance(body, bytes) and body == interop.large_body(self.args.large))
        else:
            emit(index=i, body=event.message.body)
        if self.grants and self.received == self.granted:
            self.grant()
        self.maybe_done()

    def on_link_flow(self, event):
        link = event.link
        if link.is_receiver and self.args.drain is not None and not self.drained and link.credit == 0:
            self.drained = True
            emit(event="drained", credit=link.credit, drained=link.drained())
            self.maybe_done()

    def maybe_done(self):
        if self.received == self.args.count and (self.args.drain is None or self.drained) and not self.finished:
            self.finish(self.connection)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("send", "recv"):
        interop.fail_usage("usage: pyclient.py send|recv URL ADDRESS COUNT [options]")
    parsed = interop.parse(__doc__, extra_args, sys.argv[2:])
    parsed.mode = mode
    sys.exit(interop.run(Client(parsed)))
