#!/usr/bin/python3
"""Sends COUNT messages of the broker plan (``broker_plan.planned(i)``: ``interop.message(i)``, or a large
data message for each ``--large-at I``) to ADDRESS, with delivery tag ``str(i)``, unsettled.  Prints

    outcome I ACCEPTED|REJECTED COND DESC|RELEASED|MODIFIED

for each message in index order, then ``sent COUNT``, and closes the connection.  Exits 0 only if every
message was accepted and the connection closed cleanly.  Run with /usr/bin/python3.
"""

import sys

from proton import Delivery

import broker_plan
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
            event.sender.send(broker_plan.planned(self.sent, self.args), tag=str(self.sent))
            self.sent += 1

    def _record(self, event, text):
        self.outcomes[int(event.delivery.tag)] = text
        if len(self.outcomes) == self.args.count:
            for i in sorted(self.outcomes):
                out("outcome %d %s" % (i, self.outcomes[i]))
            out("sent %d" % self.sent)
            self.finish(event.connection)

    def on_accepted(self, event):
        self._record(event, "ACCEPTED")

    def on_rejected(self, event):
        cond = event.delivery.remote.condition
        self._record(event, "REJECTED %s %s" % (cond.name if cond else None, cond.description if cond else None))

    def on_released(self, event):
        state = "MODIFIED" if event.delivery.remote_state == Delivery.MODIFIED else "RELEASED"
        self._record(event, state)

    def exit_status(self):
        status = super().exit_status()
        all_accepted = all(o == "ACCEPTED" for o in self.outcomes.values())
        return status if all_accepted else 1


if __name__ == "__main__":
    sys.exit(interop.run(Sender(interop.parse(__doc__, broker_plan.add_plan_args))))
