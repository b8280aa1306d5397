#!/usr/bin/python3
"""Receives COUNT messages from ADDRESS and checks message ``i`` (the ``i``-th to arrive) against
``broker_plan.planned(i)``, strictly typed with the codec cross-check's ``message_diffs``, then accepts it.
Prints

    ok I
    MISMATCH I: <first difference>

for each message, then ``received COUNT``, and closes the connection.  Exits 0 only if every message
matched and the connection closed cleanly.  Run with /usr/bin/python3.
"""

import sys

import broker_plan
import interop
from corpus import message_diffs
from interop import out


def extra_args(parser):
    broker_plan.add_plan_args(parser)
    parser.add_argument("--credit", type=int, default=10, help="the receiver's credit window (prefetch)")


class Receiver(interop.Peer):
    def __init__(self, args):
        super().__init__(args, prefetch=args.credit, auto_accept=True)
        self.received = 0
        self.mismatched = 0

    def start_links(self, connection):
        self.container.create_receiver(connection, self.args.address)

    def on_message(self, event):
        i = self.received
        got = event.message
        if i >= self.args.count:
            problems = ["unexpected message %d beyond COUNT" % i]
        else:
            problems = message_diffs(broker_plan.expected(i, self.args), got)
        if problems:
            self.mismatched += 1
            out("MISMATCH %d: %s%s" % (i, problems[0][:500],
                                       " (+%d more)" % (len(problems) - 1) if len(problems) > 1 else ""))
        else:
            out("ok %d%s" % (i, " large" if broker_plan.is_large(i, self.args) else ""))
        self.received += 1
        if self.received == self.args.count:
            out("received %d" % self.received)
            self.finish(event.connection)

    def exit_status(self):
        status = super().exit_status()
        return 1 if self.mismatched else status


if __name__ == "__main__":
    sys.exit(interop.run(Receiver(interop.parse(__doc__, extra_args))))
