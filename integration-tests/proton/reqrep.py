#!/usr/bin/python3
"""reqrep.py serve|request URL ADDRESS COUNT [--timeout SECONDS]: python-qpid-proton request/reply, for
nucleon's interop tests (integration-tests/tests/interop_proton_python.rs).

* ``serve`` receives COUNT requests from ADDRESS and answers each, through an anonymous-relay sender, to its
  ``reply_to`` with the body upper-cased and ``correlation_id`` set to the request's ``id``; prints
  ``served COUNT`` once every answer was accepted.
* ``request`` opens a receiver with a dynamic source, prints ``reply address ADDR`` once the peer named it,
  sends COUNT requests ``request I`` (id ``I``, ``reply_to`` that address) to ADDRESS, and checks that the
  replies are ``REQUEST I`` with correlation id ``I``; prints ``requested COUNT``.

Prints ``ready`` once its links are open. Exits 0 only for a complete run; 1 on a mismatch, an error or
the timeout (default 60 s).
"""

import argparse
import sys

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Peer(MessagingHandler):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.status = 1
        self.done = 0
        self.sent = 0
        self.reply_to = None

    def on_start(self, event):
        self.timer = event.container.schedule(self.args.timeout, self)
        self.connection = event.container.connect(self.args.url)
        if self.args.role == "serve":
            event.container.create_receiver(self.connection, self.args.address)
            self.sender = event.container.create_sender(self.connection, None)
            print("ready", flush=True)
        else:
            self.sender = event.container.create_sender(self.connection, self.args.address)
            event.container.create_receiver(self.connection, None, dynamic=True)

    def on_link_opened(self, event):
        if self.args.role == "request" and event.receiver:
            self.reply_to = event.receiver.remote_source.address
            print("reply address %s" % self.reply_to, flush=True)
            self.send_requests()

    def on_sendable(self, event):
        if self.args.role == "request":
            self.send_requests()

    def send_requests(self):
        while self.reply_to and self.sender.credit > 0 and self.sent < self.args.count:
            self.sender.send(Message(id=self.sent, reply_to=self.reply_to, body="request %d" % self.sent))
            self.sent += 1

    def on_message(self, event):
        m = event.message
        if self.args.role == "serve":
            self.sender.send(Message(address=m.reply_to, correlation_id=m.id, body=m.body.upper()))
            return
        want = "REQUEST %d" % self.done
        if m.body != want or m.correlation_id != self.done:
            print("MISMATCH reply %d: %r %r" % (self.done, m.body, m.correlation_id), flush=True)
            self.connection.close()
            return
        self.done += 1
        if self.done == self.args.count:
            self.finish("requested")

    def on_accepted(self, event):
        if self.args.role == "serve":
            self.done += 1
            if self.done == self.args.count:
                self.finish("served")

    def finish(self, what):
        print("%s %d" % (what, self.done), flush=True)
        self.status = 0
        self.timer.cancel()
        self.connection.close()

    def on_timer_task(self, event):
        print("timeout after %d" % self.done, flush=True)
        self.connection.close()

    def on_rejected(self, event):
        print("rejected", flush=True)
        self.connection.close()

    def on_transport_error(self, event):
        print("transport error: %s" % event.transport.condition, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["serve", "request"])
    parser.add_argument("url")
    parser.add_argument("address")
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=60.0)
    peer = Peer(parser.parse_args())
    Container(peer).run()
    sys.exit(peer.status)
