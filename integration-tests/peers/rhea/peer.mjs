// The rhea 3.x peer of nucleon's interop tests (integration-tests/tests/interop_rhea.rs).
//
// One process serves a whole test binary. It listens for control connections on 127.0.0.1 (a port of its
// own choosing) and prints `{"control":PORT}` once ready. Each control connection runs one operation: its
// first line is a JSON command, further lines are JSON instructions for that operation (more credit, a
// drain), and the operation answers with JSON lines, the last one `{"event":"done",...}`. Closing a control
// connection ends its operation (its AMQP connections and listener are closed). The process exits when its
// standard input closes, so it never outlives the test binary that started it.
//
// Messages are re-sent exactly as rhea decoded them (no re-typing here), so that a type rhea loses on the
// way in shows up as a difference in the tests.

import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import rhea from 'rhea';
import WebSocket, { WebSocketServer } from 'ws';

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

// A JSON-friendly view of a message body: numbers, strings and booleans as they are, buffers by length.
function describe(body) {
    if (Buffer.isBuffer(body)) return { binary: body.length };
    if (body === null || ['number', 'string', 'boolean'].includes(typeof body)) return body;
    return String(body);
}

function client(out, cmd, on_open) {
    const container = rhea.create_container({ id: `rhea-${cmd.op}` });
    const options = { host: '127.0.0.1', port: cmd.port, reconnect: false };
    for (const k of ['username', 'password', 'idle_time_out']) {
        if (cmd[k] !== undefined) options[k] = cmd[k];
    }
    // TLS (`"tls_ca": FILE`): Node's TLS, trusting only that CA, checking the server's name (`"servername"`).
    if (cmd.tls_ca !== undefined) {
        options.transport = 'tls';
        options.ca = [fs.readFileSync(cmd.tls_ca)];
        options.servername = cmd.servername ?? 'localhost';
        options.host = 'localhost';
    }
    // AMQP over WebSocket (`"websocket": "ws://..."`): rhea's binding on the `ws` package, subprotocol `amqp`.
    if (cmd.websocket !== undefined) {
        options.connection_details = container.websocket_connect(WebSocket)(cmd.websocket, ['amqp']);
    }
    const conn = container.connect(options);
    conn.on('connection_open', () => on_open(conn));
    conn.on('connection_error', (ctx) => {
        const e = ctx.error || ctx.connection.error || {};
        out({ event: 'error', condition: e.condition ?? null, description: e.description ?? String(e) });
    });
    conn.on('disconnected', (ctx) => {
        const e = ctx.error || {};
        out({ event: 'disconnected', condition: e.condition ?? null, description: e.message ?? null });
    });
    return conn;
}

// Receives `count` messages from `from` and sends each, unchanged, to `to`; each incoming delivery is
// accepted once its copy's outcome is known. Reports the outcome counts of its sends.
function echo(out, cmd) {
    return client(out, cmd, (conn) => {
        const sender = conn.open_sender({ target: { address: cmd.to } });
        const receiver = conn.open_receiver({
            source: { address: cmd.from },
            autoaccept: false,
            credit_window: cmd.credit_window ?? 100,
        });
        const pending = [];
        const outcomes = {};
        let received = 0;
        let settled = 0;
        const flush = () => {
            while (pending.length && sender.sendable()) {
                const { message, incoming } = pending.shift();
                try {
                    sender.send(message).incoming = incoming;
                } catch (e) {
                    out({ event: 'error', condition: null, description: `rhea cannot send it back: ${e}` });
                    incoming.release();
                }
            }
        };
        const outcome = (name) => (ctx) => {
            outcomes[name] = (outcomes[name] ?? 0) + 1;
            ctx.delivery.incoming.accept();
            if (++settled === cmd.count) out({ event: 'done', received, outcomes });
        };
        sender.on('sendable', flush);
        sender.on('accepted', outcome('accepted'));
        sender.on('rejected', outcome('rejected'));
        sender.on('released', outcome('released'));
        receiver.on('message', (ctx) => {
            received++;
            pending.push({ message: ctx.message, incoming: ctx.delivery });
            flush();
        });
    });
}

// Sends `messages` ({body, to}) to `address` (null: the anonymous relay), pre-settled when asked, and
// reports each delivery's outcome in order.
function send(out, cmd) {
    return client(out, cmd, (conn) => {
        const sender = conn.open_sender({
            target: { address: cmd.address },
            snd_settle_mode: cmd.presettled ? 1 : 0,
        });
        const outcomes = new Array(cmd.messages.length).fill(null);
        let next = 0;
        let known = 0;
        const report = () => {
            if (known === outcomes.length) out({ event: 'done', outcomes });
        };
        const record = (name) => (ctx) => {
            outcomes[ctx.delivery.index] = name;
            known++;
            report();
        };
        sender.on('accepted', record('accepted'));
        sender.on('rejected', record('rejected'));
        sender.on('released', record('released'));
        sender.on('sendable', () => {
            while (next < cmd.messages.length && sender.sendable()) {
                const m = cmd.messages[next];
                const d = sender.send(m.to === undefined ? { body: m.body } : { body: m.body, to: m.to });
                d.index = next++;
                if (cmd.presettled) {
                    outcomes[d.index] = d.settled ? 'settled' : 'unsettled';
                    known++;
                }
            }
            report();
        });
    });
}

// Receives from `address` with the given credit window (0: credit only by instruction), settling each
// message as `dispositions[i]` says ('accept' beyond the list) and reporting it. Instructions:
// {"flow":N} adds credit, {"drain":true} drains.
function receive(out, cmd) {
    let receiver;
    const conn = client(out, cmd, (c) => {
        receiver = c.open_receiver({
            source: { address: cmd.address },
            autoaccept: false,
            credit_window: cmd.credit_window,
        });
        let index = 0;
        receiver.on('receiver_open', () => out({ event: 'attached', credit: receiver.credit }));
        receiver.on('message', (ctx) => {
            const action = (cmd.dispositions ?? [])[index] ?? 'accept';
            out({
                event: 'message',
                index: index++,
                body: describe(ctx.message.body),
                delivery_count: ctx.message.delivery_count ?? 0,
                action,
                credit: receiver.credit,
            });
            if (action === 'reject') ctx.delivery.reject({ condition: 'amqp:not-allowed', description: 'by index' });
            else if (action === 'release') ctx.delivery.release();
            else ctx.delivery.accept();
        });
        receiver.on('receiver_drained', () => out({ event: 'drained', credit: receiver.credit }));
    });
    conn.instruct = (i) => {
        if (i.drain) receiver.drain_credit();
        if (i.flow) receiver.add_credit(i.flow);
    };
    return conn;
}

// Attaches a dynamic receiver, sends `body` to `address` with `reply_to` set to the receiver's address,
// and reports the reply.
function request(out, cmd) {
    return client(out, cmd, (conn) => {
        const receiver = conn.open_receiver({ source: { dynamic: true } });
        receiver.on('receiver_open', (ctx) => {
            const reply_to = ctx.receiver.source.address;
            out({ event: 'reply_to', address: reply_to });
            conn.open_sender({ target: { address: cmd.address } }).send({
                message_id: 'request-1',
                reply_to,
                body: cmd.body,
            });
        });
        receiver.on('message', (ctx) => {
            out({
                event: 'done',
                body: describe(ctx.message.body),
                correlation_id: ctx.message.correlation_id ?? null,
                to: ctx.message.to ?? null,
            });
        });
    });
}

// Opens a connection (SASL as given), stays quiet for `quiet_ms`, then sends one message to `address`
// and reports its outcome. A failure is reported as an `error` event.
function quiet(out, cmd) {
    return client(out, cmd, (conn) => {
        out({ event: 'open' });
        setTimeout(() => {
            const sender = conn.open_sender({ target: { address: cmd.address } });
            sender.once('sendable', () => sender.send({ body: 'after-quiet' }));
            sender.on('accepted', () => out({ event: 'done', outcome: 'accepted' }));
            sender.on('rejected', () => out({ event: 'done', outcome: 'rejected' }));
        }, cmd.quiet_ms ?? 0);
    });
}

// A listener: messages that arrive on a link are stored by its target address and settled by index as
// `dispositions[address]` says ('accept' beyond the list); a link attached to receive from an address is
// sent what is stored there, in order (a dynamic source gets a fresh address); a message to `requests` is
// answered on the link whose address is its `reply_to`. Options: `sasl` ({user,password} enables PLAIN
// only; "anonymous" enables ANONYMOUS only), `idle_time_out`, `credit_window` (0: credit by instruction
// {"flow":N}).
function listen(out, cmd) {
    const container = rhea.create_container({ id: 'rhea-listener' });
    if (cmd.sasl === 'anonymous') {
        container.sasl_server_mechanisms.enable_anonymous();
    } else if (cmd.sasl) {
        container.sasl_server_mechanisms.enable_plain(
            (user, password) => user === cmd.sasl.user && password === cmd.sasl.password,
        );
    }
    const connections = new Set();
    const store = new Map();
    const counts = new Map();
    const senders = new Map();
    const receivers = [];
    let dynamic = 0;
    const queue = (address) => {
        if (!store.has(address)) store.set(address, []);
        return store.get(address);
    };
    const pump = (sender) => {
        const q = queue(sender.address);
        while (q.length && sender.sendable()) {
            const { message, index } = q.shift();
            try {
                sender.send(message).index = index;
            } catch (e) {
                out({ event: 'error', condition: null, description: `rhea cannot send message ${index}: ${e}` });
            }
        }
        if (!q.length && sender._draining) sender.set_drained(true);
    };
    const outcome = (name) => (ctx) => {
        out({ event: 'outcome', address: ctx.sender.address, index: ctx.delivery.index, outcome: name });
    };
    container.on('sender_open', (ctx) => {
        const s = ctx.sender;
        const source = s.remote.attach.source || {};
        s.address = source.dynamic ? `dynamic-${++dynamic}` : source.address;
        s.set_source({ address: s.address, dynamic: Boolean(source.dynamic) });
        senders.set(s.address, s);
        out({ event: 'sender_open', address: s.address });
    });
    container.on('sendable', (ctx) => pump(ctx.sender));
    container.on('sender_draining', (ctx) => pump(ctx.sender));
    container.on('accepted', outcome('accepted'));
    container.on('rejected', outcome('rejected'));
    container.on('released', outcome('released'));
    container.on('receiver_open', (ctx) => {
        const r = ctx.receiver;
        const target = r.remote.attach.target || {};
        r.address = target.address;
        r.set_target({ address: r.address });
        receivers.push(r);
        out({ event: 'receiver_open', address: r.address });
    });
    container.on('message', (ctx) => {
        const address = ctx.receiver.address;
        const index = counts.get(address) ?? 0;
        counts.set(address, index + 1);
        const presettled = Boolean(ctx.delivery.remote_settled);
        const action = presettled ? 'none' : ((cmd.dispositions ?? {})[address] ?? [])[index] ?? 'accept';
        out({ event: 'received', address, index, presettled, action, body: describe(ctx.message.body) });
        if (action === 'reject') ctx.delivery.reject({ condition: 'amqp:not-allowed', description: 'by index' });
        else if (action === 'release') ctx.delivery.release();
        else if (action === 'accept') ctx.delivery.accept();
        if (address === 'requests') {
            const reply = senders.get(ctx.message.reply_to);
            reply?.send({ to: ctx.message.reply_to, correlation_id: ctx.message.message_id, body: ctx.message.body });
        } else {
            queue(address).push({ message: ctx.message, index });
            const s = senders.get(address);
            if (s) pump(s);
        }
    });
    container.on('disconnected', (ctx) => connections.delete(ctx.connection));
    const listen_options = { port: 0, host: '127.0.0.1', credit_window: cmd.credit_window ?? 100, autoaccept: false };
    if (cmd.idle_time_out !== undefined) listen_options.idle_time_out = cmd.idle_time_out;
    if (cmd.sasl) listen_options.require_sasl = true;
    // TLS (`"tls_cert"`, `"tls_key"`: PEM files): Node's TLS server.
    if (cmd.tls_cert !== undefined) {
        listen_options.transport = 'tls';
        listen_options.cert = fs.readFileSync(cmd.tls_cert);
        listen_options.key = fs.readFileSync(cmd.tls_key);
    }
    // AMQP over WebSocket (`"websocket": true`): a `ws` server that agrees to the `amqp` subprotocol only,
    // each socket handed to rhea.
    const server = cmd.websocket
        ? new WebSocketServer({
              port: 0,
              host: '127.0.0.1',
              handleProtocols: (protocols) => (protocols.has('amqp') ? 'amqp' : false),
          })
        : container.listen(listen_options);
    if (cmd.websocket) {
        server.on('connection', (socket) => container.websocket_accept(socket, listen_options));
    }
    server.on('listening', () => out({ event: 'listening', port: server.address().port }));
    server.on('error', (e) => out({ event: 'error', description: String(e) }));
    container.on('connection_open', (ctx) => connections.add(ctx.connection));
    container.on('connection_close', (ctx) => connections.delete(ctx.connection));
    return {
        close: () => {
            server.close();
            for (const c of connections) c.close();
        },
        instruct: (i) => {
            if (i.flow) receivers.forEach((r) => r.add_credit(i.flow));
        },
    };
}

const ops = { echo, send, receive, request, quiet, listen };

// An exception thrown inside rhea (a value it cannot decode or encode, say) is reported to every running
// operation, so that the tests fail with it instead of waiting. A failed write to a control connection
// whose test has finished (EPIPE and the like, which carry a `syscall`) concerns nobody else.
const running_outputs = new Set();
process.on('uncaughtException', (e) => {
    console.error(e);
    if (e && e.syscall) return;
    for (const out of running_outputs) out({ event: 'error', description: String(e && e.stack ? e.stack : e) });
});

const control = net.createServer((socket) => {
    let running = null;
    const out = (o) => {
        if (socket.destroyed || !socket.writable) return;
        try {
            socket.write(JSON.stringify(o) + '\n', () => {});
        } catch {
            // The test has gone: nothing left to tell it.
        }
    };
    readline.createInterface({ input: socket }).on('line', (line) => {
        let cmd;
        try {
            cmd = JSON.parse(line);
        } catch (e) {
            out({ event: 'error', description: `bad JSON: ${e}` });
            return;
        }
        if (running) {
            running.instruct?.(cmd);
        } else if (ops[cmd.op]) {
            running = ops[cmd.op](out, cmd);
        } else {
            out({ event: 'error', description: `unknown op ${cmd.op}` });
        }
    });
    running_outputs.add(out);
    socket.on('error', () => {});
    socket.on('close', () => {
        running_outputs.delete(out);
        running?.close();
    });
});
control.listen({ port: 0, host: '127.0.0.1' }, () => {
    console.log(JSON.stringify({ control: control.address().port }));
});
