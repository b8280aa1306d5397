#!/usr/bin/python3
"""Receives COUNT messages from ADDRESS, checks each against ``interop.message(i)`` (strictly typed, with the
codec cross-check's ``message_diffs``) and accepts it.  Message ``i`` must arrive ``i``-th.  With
``--large SIZE`` each message must instead be a single data section holding ``interop.large_body(SIZE)``.
Prints

    ok I
    MISMATCH I: <first difference>

for each message, then ``received COUNT``, and closes the connection.  Exits 0 only if every message matched
and the connection closed cleanly.  Run with /usr/bin/python3.
"""

import sys

import interop
from interop import out


def extra_args(parser):
    parser.add_argument("--credit", type=int, default=10, help="the receiver's credit window (prefetch)")
    parser.add_argument("--large", type=int, help="expect data bodies of interop.large_body(LARGE)")


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
        if self.args.large is None:
            problems = interop.diffs(i, got)
        elif not isinstance(got.body, bytes):
            problems = ["body: expected a data section got %r" % type(got.body)]
        elif got.body != interop.large_body(self.args.large):
            problems = ["body: %d bytes differ from large_body(%d)" % (len(got.body), self.args.large)]
        else:
            problems = []
        if problems:
            self.mismatched += 1
            out("MISMATCH %d: %s%s" % (i, problems[0],
                                       " (+%d more)" % (len(problems) - 1) if len(problems) > 1 else ""))
        else:
            out("ok %d" % i)
        self.received += 1
        if self.received == self.args.count:
            out("received %d" % self.received)
            self.finish(event.connection)

    def exit_status(self):
        status = super().exit_status()
        return 1 if self.mismatched else status


if __name__ == "__main__":
    sys.exit(interop.run(Receiver(interop.parse(__doc__, extra_args))))
