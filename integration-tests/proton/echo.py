#!/usr/bin/python3
"""echo.py URL FROM TO COUNT [--timeout SECONDS]: receives COUNT messages from address FROM and sends each,
as python-qpid-proton decoded it (``proton.Message``, re-encoded by Proton), to address TO, for nucleon's
type-fidelity interop tests (integration-tests/tests/interop_proton_python.rs).

Accepts each message it receives, sends the echoes unsettled, and prints ``echoed COUNT`` once every echo
was accepted; then closes the connection and exits 0. Exits 1 on any error, an echo not accepted, or after
the timeout (default 60 s).
"""

import argparse
import sys

from proton.handlers import MessagingHandler
from proton.reactor import Container


class Echo(MessagingHandler):
    def __init__(self, args):
        super().__init__(prefetch=10)
        self.args = args
        self.pending = []
        self.accepted = 0
        self.status = 1

    def on_start(self, event):
        self.timer = event.container.schedule(self.args.timeout, self)
        self.connection = event.container.connect(self.args.url)
        event.container.create_receiver(self.connection, self.args.source)
        self.sender = event.container.create_sender(self.connection, self.args.target)

    def on_timer_task(self, event):
        print("timeout after %d accepted" % self.accepted, flush=True)
        self.connection.close()

    def on_message(self, event):
        self.pending.append(event.message)
        self.flush()

    def on_sendable(self, event):
        self.flush()

    def flush(self):
        while self.pending and self.sender.credit > 0:
            self.sender.send(self.pending.pop(0))

    def on_accepted(self, event):
        self.accepted += 1
        if self.accepted == self.args.count:
            print("echoed %d" % self.accepted, flush=True)
            self.status = 0
            self.timer.cancel()
            self.connection.close()

    def on_rejected(self, event):
        print("echo rejected", flush=True)
        self.connection.close()

    def on_released(self, event):
        print("echo released", flush=True)
        self.connection.close()

    def on_transport_error(self, event):
        print("transport error: %s" % event.transport.condition, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=60.0)
    echo = Echo(parser.parse_args())
    Container(echo).run()
    sys.exit(echo.status)
