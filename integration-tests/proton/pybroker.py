#!/usr/bin/python3
"""pybroker.py PORT: a small queue broker on 127.0.0.1:PORT, written with python-qpid-proton's Container and
MessagingHandler, for nucleon's interop tests (integration-tests/tests/interop_proton_python.rs).

* Each address is a queue, made on first use. Messages are decoded into ``proton.Message`` and re-encoded
  by Proton when delivered, so what a client receives is what Proton's ``Message`` keeps.
* A receiver asking for a dynamic source gets a fresh queue ``dynamic-N`` as its address (request/reply).
* A sender with no target address (the anonymous relay) publishes to each message's ``to``.
* A message whose application property ``x-outcome`` is ``reject`` or ``release`` gets that outcome and is
  not queued; every other message is accepted once queued. Deliveries to consumers are unsettled.
* Offers SASL ANONYMOUS only (Proton's default without a SASL configuration).
* Advertises a max-frame-size of 64 KiB (Proton's own default is no limit), so that a large message sent to
  it is split into many transfer frames.

Prints ``listening on PORT`` once it listens. Stops when its standard input closes.
"""

import collections
import os
import sys
import threading

from proton.handlers import MessagingHandler
from proton.reactor import Container


MAX_FRAME_SIZE = 64 * 1024


class Queue:
    def __init__(self):
        self.messages = collections.deque()
        self.consumers = []

    def dispatch(self):
        moved = True
        while self.messages and moved:
            moved = False
            for consumer in self.consumers:
                if consumer.credit > 0 and self.messages:
                    consumer.send(self.messages.popleft())
                    moved = True


class Broker(MessagingHandler):
    def __init__(self, port, tls=None):
        super().__init__(auto_accept=False)
        self.port = port
        self.tls = tls
        self.queues = {}
        self.dynamic = 0

    def queue(self, address):
        return self.queues.setdefault(address, Queue())

    def on_start(self, event):
        if self.tls:
            from proton import SSLDomain
            domain = SSLDomain(SSLDomain.MODE_SERVER)
            domain.set_credentials(self.tls[0], self.tls[1], None)
            event.container.listen("amqps://127.0.0.1:%d" % self.port, ssl_domain=domain)
        else:
            event.container.listen("127.0.0.1:%d" % self.port)
        print("listening on %d" % self.port, flush=True)

    def on_connection_bound(self, event):
        event.transport.max_frame_size = MAX_FRAME_SIZE

    def on_link_opening(self, event):
        link = event.link
        if link.is_sender:
            if link.remote_source.dynamic:
                self.dynamic += 1
                address = "dynamic-%d" % self.dynamic
            else:
                address = link.remote_source.address
            link.source.address = address
            self.queue(address).consumers.append(link)
        elif link.remote_target.address:
            link.target.address = link.remote_target.address

    def unsubscribe(self, link):
        if link.is_sender and link.source.address in self.queues:
            queue = self.queues[link.source.address]
            if link in queue.consumers:
                queue.consumers.remove(link)

    def on_link_closing(self, event):
        self.unsubscribe(event.link)

    def on_connection_closing(self, event):
        self.forget(event.connection)

    def on_disconnected(self, event):
        self.forget(event.connection)

    def forget(self, connection):
        link = connection.link_head(0)
        while link:
            self.unsubscribe(link)
            link = link.next(0)

    def on_sendable(self, event):
        self.queue(event.link.source.address).dispatch()

    def on_message(self, event):
        outcome = (event.message.properties or {}).get("x-outcome")
        if outcome == "reject":
            self.reject(event.delivery)
            return
        if outcome == "release":
            self.release(event.delivery, delivered=False)
            return
        address = event.link.target.address or event.message.address
        queue = self.queue(address)
        queue.messages.append(event.message)
        queue.dispatch()
        self.accept(event.delivery)


def stop_at_end_of_input():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=stop_at_end_of_input, daemon=True).start()
    # pybroker.py PORT [CERT KEY]: with a certificate and key (PEM), it listens with TLS only.
    tls = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else None
    Container(Broker(int(sys.argv[1]), tls)).run()
