#!/usr/bin/python3
"""Sends COUNT type-rich messages (``interop.message(i)``, delivery tag ``str(i)``) to ADDRESS and prints the
outcome the receiver gave each one, in index order:

    outcome I ACCEPTED
    outcome I REJECTED CONDITION DESCRIPTION
    outcome I RELEASED
    outcome I MODIFIED

then closes the connection.  Exits 0 only if every message got an outcome and the connection closed cleanly
(or, with ``--expect-auth-failure``, only if SASL authentication was refused).  Run with /usr/bin/python3.
"""

import sys

from proton import Delivery

import interop
from interop import out


class Sender(interop.Peer):
    def __init__(self, args):
        super().__init__(args, auto_settle=True)
        self.sent = 0
        self.outcomes = {}

    def start_links(self, connection):
        self.container.create_sender(connection, self.args.address)

    def on_sendable(self, event):
        while event.sender.credit > 0 and self.sent < self.args.count:
            event.sender.send(interop.message(self.sent), tag=str(self.sent))
            self.sent += 1

    def _record(self, event, text):
        self.outcomes[int(event.delivery.tag)] = text
        if len(self.outcomes) == self.args.count:
            for i in sorted(self.outcomes):
                out("outcome %d %s" % (i, self.outcomes[i]))
            self.finish(event.connection)

    def on_accepted(self, event):
        self._record(event, "ACCEPTED")

    def on_rejected(self, event):
        cond = event.delivery.remote.condition
        self._record(event, "REJECTED %s %s" % (cond.name if cond else None, cond.description if cond else None))

    def on_released(self, event):
        state = "MODIFIED" if event.delivery.remote_state == Delivery.MODIFIED else "RELEASED"
        self._record(event, state)


if __name__ == "__main__":
    sys.exit(interop.run(Sender(interop.parse(__doc__))))
