//! nucleon's sans-IO engine over real sockets, with no runtime, against Apache Qpid Proton 0.37 (issue #3).
//!
//! Every test runs a [`Connection`] through the blocking [`Driver`] on 127.0.0.1:
//!
//! * **As a client of Proton's C `broker` example** (built by `scripts/build-proton-examples.sh` into
//!   `target/proton-examples/`; each test starts its own broker on a free port and kills it when done, even
//!   on panic): a type-rich message round trip, 10,000 messages with credit, a 5 MiB message (Proton's
//!   max-frame-size is unlimited, so we send it in one frame; ours is 16 KiB, so we reassemble the hundreds of
//!   frames the broker sends back), pre-settled sends, and SASL ANONYMOUS.
//! * **As a server for python-qpid-proton clients** (`integration-tests/proton/client_send.py` and
//!   `client_recv.py`, run with Debian's `/usr/bin/python3`): accept/reject/release outcomes as the Python
//!   sender sees them, messages to a Python receiver, a 5 MiB message split into the 16 KiB frames the Python
//!   client asks for, SASL PLAIN with good and bad credentials, SASL ANONYMOUS, and idle-timeout heartbeats in
//!   both directions.
//!
//! The type-rich message is defined twice, in Rust ([`rich_message`]) and in Python (`interop.message`); each
//! side checks what it receives against its own definition, strictly typed.
//!
//! Quirks of the C broker that shape the tests: it grants senders only 5 credits at a time, sends its
//! deliveries pre-settled (at-most-once), offers only SASL ANONYMOUS (and also takes clients that skip SASL),
//! and keeps its queues for as long as it runs (each test starts its own broker).
//!
//! Nothing is skipped: without Proton's packages the tests fail and say to run
//! `scripts/install-test-deps.sh`.

use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nucleon_integration_tests::driver::{answer_peer, listen, Driver};
use nucleon_integration_tests::peers::proton::{
    c_examples, python_script, start_c_listener, Finished, ProtonProcess,
};
use nucleon_protocol::codec::{
    Array, Decimal128, Decimal32, Decimal64, Descriptor, Map, Symbol, Timestamp, Type, Uuid,
};
use nucleon_protocol::engine::{
    Connection, ConnectionConfig, Event, LinkConfig, LinkId, PlainAuthenticator, SaslClientConfig,
    SaslServerConfig, SessionId,
};
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Error, ErrorCondition, MessageId, Rejected, Released, Role,
    SenderSettleMode,
};
use nucleon_protocol::{Message, Value};

/// How long one connection may take in total before its test fails (a safety net: tests take far less).
const BUDGET: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------------
// The test message
// ---------------------------------------------------------------------------------------------------------------

/// Test message `i`: the same message as `interop.message(i)` in `integration-tests/proton/interop.py`.
fn rich_message(i: u32) -> Message {
    let sym = |s: &'static str| Value::Symbol(Symbol::from_static(s));
    let mut coded = Map::new();
    coded.insert("k", Value::Uint(i));
    let mut deeper = Map::new();
    deeper.insert(
        "deeper",
        Value::List(vec![
            Value::Ulong(u64::MAX),
            Value::Timestamp(Timestamp(1_700_000_000_000)),
        ]),
    );
    let mut nested = Map::new();
    nested.insert(sym("deep"), deeper);
    let mut body = Map::new();
    body.insert("index", Value::Long(i.into()));
    body.insert("text", format!("message {i} \u{e9}\u{4e2d}"));
    body.insert(
        "list",
        Value::List(vec![
            Value::Int(i as i32),
            "two".into(),
            Value::List(vec![sym("three"), Value::Null, Value::Bool(true)]),
        ]),
    );
    body.insert(
        "ints",
        Array::new(
            Type::Int,
            vec![Value::Int(1), Value::Int(-2), Value::Int(i as i32)],
        )
        .expect("an int array"),
    );
    body.insert(
        "names",
        Array::described(
            Descriptor::Symbol(Symbol::from_static("com.example:names")),
            Type::String,
            vec!["a".into(), "bb".into()],
        )
        .expect("a string array"),
    );
    body.insert(
        "point",
        Value::described(
            Descriptor::Symbol(Symbol::from_static("com.example:point")),
            Value::List(vec![Value::Double(1.5), Value::Double(-2.5)]),
        ),
    );
    body.insert(
        "coded",
        Value::described(Descriptor::Code(0x0000_0137_0000_0001), coded),
    );
    body.insert("nested", nested);
    body.insert(
        "binary",
        Value::Binary((0..(i % 64) as u8).collect::<Vec<u8>>().into()),
    );
    body.insert("empty_list", Value::List(Vec::new()));
    body.insert("empty_map", Map::new());

    Message::builder()
        .body(body)
        .durable(true)
        .priority(7)
        .ttl(1500)
        .first_acquirer(true)
        .delivery_count(2)
        .message_id(1000 + u64::from(i))
        .user_id(Bytes::from_static(b"nucleon"))
        .to("interop")
        .subject(format!("subject {i}"))
        .reply_to("reply")
        .correlation_id(Uuid((u128::from(i) + 1).to_be_bytes()))
        .content_type(Symbol::from_static("application/x-nucleon"))
        .content_encoding(Symbol::from_static("identity"))
        .absolute_expiry_time(Timestamp(1_700_000_001_500))
        .creation_time(Timestamp(1_700_000_000_250))
        .group_id("group")
        .group_sequence(i + 1)
        .reply_to_group_id("reply-group")
        .property("index", i64::from(i))
        .property("null", Value::Null)
        .property("bool", true)
        .property("ubyte", 200u8)
        .property("ushort", 60000u16)
        .property("uint", 4_000_000_000u32)
        .property("ulong", (1u64 << 40) + u64::from(i))
        .property("byte", -100i8)
        .property("short", -30000i16)
        .property("int", -2_000_000_000i32)
        .property("long", -(1i64 << 40))
        .property("float", 1.5f32)
        .property("double", 2.25f64)
        .property("decimal32", Decimal32([0x32, 0x80, 0x00, 0x01]))
        .property("decimal64", Decimal64([0x31, 0xc0, 0, 0, 0, 0, 0, 0x01]))
        .property(
            "decimal128",
            Decimal128([0x30, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]),
        )
        .property("char", '\u{20ac}')
        .property("timestamp", Timestamp(1_311_704_463_521))
        .property(
            "uuid",
            Uuid([
                0xf8, 0x1d, 0x4f, 0xae, 0x7d, 0xec, 0x11, 0xd0, 0xa7, 0x65, 0x00, 0xa0, 0xc9, 0x1e,
                0x6b, 0xf6,
            ]),
        )
        .property("binary", Bytes::from_static(b"\x00\x01\xfe\xff"))
        .property("string", "text \u{e9}")
        .property("symbol", Symbol::from_static("sym:bol"))
        .delivery_annotation("x-opt-hop", "nucleon")
        .message_annotation("x-opt-index", i)
        .message_annotation("x-opt-list", Value::List(vec![Value::Long(1), sym("two")]))
        .build()
}

/// The `index` application property of a test message.
fn index_of(m: &Message) -> Option<u32> {
    m.property("index")
        .and_then(Value::as_i64)
        .and_then(|i| u32::try_from(i).ok())
}

/// A small numbered message for the bulk tests.
fn numbered(i: u32) -> Message {
    Message::builder()
        .message_id(u64::from(i))
        .property("index", i64::from(i))
        .body(format!("message {i}"))
        .build()
}

fn tag(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

fn decode(payload: &Bytes) -> Message {
    Message::decode(payload.clone())
        .unwrap_or_else(|e| panic!("cannot decode a received message: {e}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes (started and captured by `nucleon_integration_tests::peers::proton`)
// ---------------------------------------------------------------------------------------------------------------

/// Proton's C `broker` example of this test alone on a free port of 127.0.0.1; stopped when dropped.
struct Broker {
    process: ProtonProcess,
    addr: SocketAddr,
}

impl Broker {
    /// Starts the broker and waits for its `listening on PORT` line, which proves that the broker, not some
    /// other test's listener, owns the port.
    fn start() -> Broker {
        let (process, port) = start_c_listener("broker", &[]);
        Broker {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// A client connection to the broker, opened; `tweak` adjusts the default client configuration.
    fn connect(&self, name: &str, tweak: impl FnOnce(&mut ConnectionConfig)) -> Driver {
        let mut config = ConnectionConfig::client(format!("nucleon-{name}"));
        config.hostname = Some("127.0.0.1".into());
        tweak(&mut config);
        let mut d = Driver::connect(self.addr, config, BUDGET).unwrap_or_else(|e| panic!("{e}"));
        d.conn().open().expect("open");
        wait(&mut d, "the broker's open", |_, e| {
            matches!(e, Event::ConnectionRemoteOpen(_)).then_some(())
        });
        d
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("C broker output:\n{}", self.process.output());
        }
    }
}

/// The port of our listener, for a client's command line.
fn port_of(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .expect("listener address")
        .port()
        .to_string()
}

/// Runs `integration-tests/proton/SCRIPT URL ARGS...` against our listener.
fn python_client(listener: &TcpListener, script: &str, args: &[&str]) -> ProtonProcess {
    let mut all = vec![format!("amqp://127.0.0.1:{}", port_of(listener))];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    ProtonProcess::spawn(python_script(script, &all))
}

/// Runs Proton's C example `NAME 127.0.0.1 PORT ARGS...` against our listener.
fn c_client(listener: &TcpListener, name: &str, args: &[&str]) -> ProtonProcess {
    let mut command = Command::new(c_examples().join(name));
    command.arg("127.0.0.1").arg(port_of(listener)).args(args);
    ProtonProcess::spawn(command)
}

/// Starts a client with `start` against a fresh listener and serves it with a server engine with `config`:
/// `serve` drives our side; then the client must exit. If our side fails, the test fails showing the
/// client's output too.
fn with_client<T>(
    start: impl FnOnce(&TcpListener) -> ProtonProcess,
    config: ConnectionConfig,
    serve: impl FnOnce(&mut Driver) -> Result<T, String>,
) -> (T, Finished) {
    let listener = listen().expect("listen on 127.0.0.1");
    let client = start(&listener);
    // The client connects within a second or so; if it dies first, do not wait the whole budget.
    let served = panic::catch_unwind(AssertUnwindSafe(|| {
        Driver::accept(&listener, config, Duration::from_secs(10))
            .map_err(|e| e.to_string())
            .and_then(|mut d| {
                d.set_deadline(BUDGET);
                serve(&mut d)
            })
    }));
    let output = client.finish(Duration::from_secs(10));
    match served {
        Ok(Ok(v)) => (v, output),
        Ok(Err(e)) => panic!("our server failed: {e}\n\n{output}"),
        Err(failure) => {
            eprintln!("{output}");
            panic::resume_unwind(failure)
        }
    }
}

/// [`with_client`] for the Python client `script` with `args` after the URL.
fn with_python_client<T>(
    script: &str,
    args: &[&str],
    config: ConnectionConfig,
    serve: impl FnOnce(&mut Driver) -> Result<T, String>,
) -> (T, Finished) {
    with_client(|l| python_client(l, script, args), config, serve)
}

// ---------------------------------------------------------------------------------------------------------------
// Engine helpers
// ---------------------------------------------------------------------------------------------------------------

/// `Driver::run_until`, failing the test with the driver's report.
fn wait<T>(d: &mut Driver, what: &str, f: impl FnMut(&mut Connection, &Event) -> Option<T>) -> T {
    d.run_until(what, f).unwrap_or_else(|e| panic!("{e}"))
}

fn begin(d: &mut Driver) -> SessionId {
    d.conn().begin().expect("begin")
}

/// Attaches a sender and waits for the peer's first credit.
fn attach_sender(d: &mut Driver, session: SessionId, config: LinkConfig) -> LinkId {
    let link = d.conn().attach(session, config).expect("attach a sender");
    wait(d, "credit for our sender", |_, e| match e {
        Event::LinkCredit { link: l, credit } if *l == link && *credit > 0 => Some(()),
        _ => None,
    });
    link
}

/// Sends `messages` as fast as the peer's credit allows; unsettled ones must be accepted (and settled).
/// Returns how many `LinkCredit` events showed credit (how often the peer topped up).
fn send_all(d: &mut Driver, link: LinkId, messages: &[Bytes], settled: bool) -> usize {
    let mut sent = 0;
    let mut outcomes = 0;
    let mut credit_events = 0;
    let total = messages.len();
    let pump = |conn: &mut Connection, sent: &mut usize| {
        while *sent < total && conn.credit(link).expect("our link") > 0 {
            conn.send(link, tag(*sent as u32), messages[*sent].clone(), settled)
                .expect("send with credit");
            *sent += 1;
        }
    };
    pump(d.conn(), &mut sent);
    let done = |sent: usize, outcomes: usize| sent == total && (settled || outcomes == total);
    if done(sent, outcomes) {
        return credit_events;
    }
    wait(
        d,
        &format!("{total} messages to be sent and accepted"),
        |conn, e| {
            match e {
                Event::LinkCredit { link: l, credit } if *l == link && *credit > 0 => {
                    credit_events += 1
                }
                Event::RemoteDisposition {
                    delivery,
                    state,
                    settled: remote_settled,
                } if delivery.link == link => {
                    assert_eq!(
                        (state, *remote_settled),
                        (&Some(DeliveryState::Accepted(Accepted {})), true),
                        "the outcome of delivery {}",
                        delivery.id
                    );
                    outcomes += 1;
                }
                _ => {}
            }
            pump(conn, &mut sent);
            done(sent, outcomes).then_some(())
        },
    );
    assert!(
        !settled || outcomes == 0,
        "pre-settled deliveries got {outcomes} outcomes"
    );
    credit_events
}

/// Receives `count` messages on a new receiver from `source`, keeping `window` credits outstanding. Returns
/// the payloads in arrival order and whether each was settled by the sender.
fn receive(
    d: &mut Driver,
    session: SessionId,
    source: &str,
    count: usize,
    window: u32,
) -> Vec<(Bytes, bool)> {
    let link = d
        .conn()
        .attach(
            session,
            LinkConfig::receiver(format!("receiver-{source}"), source),
        )
        .expect("attach a receiver");
    d.conn().add_credit(link, window).expect("credit");
    let mut got = Vec::with_capacity(count);
    if count == 0 {
        return got;
    }
    wait(d, &format!("{count} messages from {source}"), |conn, e| {
        if let Event::Delivery {
            delivery,
            payload,
            settled,
            ..
        } = e
        {
            if delivery.link == link {
                got.push((payload.clone(), *settled));
                if !*settled {
                    conn.disposition(*delivery, Some(DeliveryState::Accepted(Accepted {})), true)
                        .expect("accept");
                }
                let credit = conn.credit(link).expect("our link");
                let wanted = (count - got.len()).min(window as usize) as u32;
                if credit <= window / 2 && wanted > credit {
                    conn.add_credit(link, wanted - credit).expect("more credit");
                }
            }
        }
        (got.len() == count).then_some(())
    });
    got
}

// ---------------------------------------------------------------------------------------------------------------
// Against Proton's C broker (we are the client)
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn broker_round_trips_a_type_rich_message() {
    let broker = Broker::start();
    let mut d = broker.connect("round-trip", |_| {});
    let session = begin(&mut d);
    let sent = rich_message(7);
    let bytes = sent.to_bytes();
    let link = attach_sender(&mut d, session, LinkConfig::sender("sender", "round-trip"));
    send_all(&mut d, link, std::slice::from_ref(&bytes), false);

    let got = receive(&mut d, session, "round-trip", 1, 10);
    let (payload, settled) = &got[0];
    assert!(settled, "the C broker sends its deliveries pre-settled");
    assert_eq!(
        payload, &bytes,
        "the broker forwards the message bytes untouched"
    );
    let back = decode(payload);
    assert_eq!(back, sent);
    assert_eq!(index_of(&back), Some(7));

    // An orderly end: close the sender, then end the session (with the receiver), then close.
    d.conn().detach(link, true, None).expect("detach");
    wait(&mut d, "the broker's detach", |_, e| {
        (*e == Event::LinkClosed(link)).then_some(())
    });
    d.conn().end(session, None).expect("end");
    wait(&mut d, "the broker's end", |_, e| {
        (*e == Event::SessionClosed(session)).then_some(())
    });
    d.close().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn broker_takes_and_gives_10k_messages_with_credit() {
    const N: u32 = 10_000;
    let broker = Broker::start();
    let mut d = broker.connect("bulk", |_| {});
    let session = begin(&mut d);
    let messages: Vec<Bytes> = (0..N).map(|i| numbered(i).to_bytes()).collect();
    let started = Instant::now();
    let link = attach_sender(&mut d, session, LinkConfig::sender("sender", "bulk"));
    let top_ups = send_all(&mut d, link, &messages, false);
    // The broker grants 5 credits at a time, so sending 10,000 takes many top-ups.
    assert!(
        top_ups >= (N / 5) as usize / 2,
        "only {top_ups} credit top-ups for {N} messages"
    );
    let sent_in = started.elapsed();

    let started = Instant::now();
    let got = receive(&mut d, session, "bulk", N as usize, 200);
    for (i, (payload, settled)) in got.iter().enumerate() {
        assert!(settled, "message {i} was not pre-settled");
        assert_eq!(
            payload, &messages[i],
            "message {i} is out of order or altered"
        );
    }
    eprintln!(
        "10k messages: sent in {sent_in:?}, received in {:?}",
        started.elapsed()
    );
    d.close().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn broker_carries_a_5_mib_multi_frame_message() {
    let broker = Broker::start();
    // Proton's max-frame-size is unlimited, so we send the message in one frame; ours is 16 KiB, so the broker
    // must split it into hundreds of frames, which we reassemble.
    const MAX_FRAME: u32 = 16 * 1024;
    let mut d = broker.connect("large", |c| c.max_frame_size = MAX_FRAME);
    let session = begin(&mut d);
    // Pseudo-random bytes (xorshift), so a misplaced frame cannot go unnoticed.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sent = Message::builder().message_id("large").data(data).build();
    let bytes = sent.to_bytes();
    assert!(bytes.len() > 300 * MAX_FRAME as usize);
    let link = attach_sender(&mut d, session, LinkConfig::sender("sender", "large"));
    send_all(&mut d, link, std::slice::from_ref(&bytes), false);
    let got = receive(&mut d, session, "large", 1, 1);
    assert_eq!(got[0].0.len(), bytes.len());
    assert!(got[0].0 == bytes, "the 5 MiB message came back altered");
    assert_eq!(decode(&got[0].0), sent);
    d.close().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn broker_takes_pre_settled_sends() {
    const N: u32 = 50;
    let broker = Broker::start();
    let mut d = broker.connect("presettled", |_| {});
    let session = begin(&mut d);
    let messages: Vec<Bytes> = (0..N).map(|i| numbered(i).to_bytes()).collect();
    let config = LinkConfig {
        snd_settle_mode: SenderSettleMode::Settled,
        ..LinkConfig::sender("sender", "presettled")
    };
    let link = attach_sender(&mut d, session, config);
    send_all(&mut d, link, &messages, true);
    assert_eq!(d.connection().unsettled_outgoing(session), Ok(0));

    let got = receive(&mut d, session, "presettled", N as usize, 20);
    let payloads: Vec<&Bytes> = got.iter().map(|(p, _)| p).collect();
    assert_eq!(payloads, messages.iter().collect::<Vec<_>>());
    d.close().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn broker_sasl_anonymous() {
    let broker = Broker::start();
    let anonymous = SaslClientConfig {
        mechanisms: vec![Symbol::from_static("ANONYMOUS")],
        ..SaslClientConfig::default()
    };
    let mut config = ConnectionConfig::client("nucleon-sasl");
    config.hostname = Some("127.0.0.1".into());
    config.sasl_client = Some(anonymous);
    let mut d = Driver::connect(broker.addr, config, BUDGET).unwrap_or_else(|e| panic!("{e}"));
    d.conn().open().expect("open");
    let mechanism = wait(&mut d, "SASL to finish", |_, e| match e {
        Event::Authenticated { mechanism, user } => Some((mechanism.clone(), user.clone())),
        _ => None,
    });
    assert_eq!(mechanism, (Symbol::from_static("ANONYMOUS"), None));
    wait(&mut d, "the broker's open", |_, e| {
        matches!(e, Event::ConnectionRemoteOpen(_)).then_some(())
    });
    // The connection works after SASL.
    let session = begin(&mut d);
    let link = attach_sender(&mut d, session, LinkConfig::sender("sender", "sasl"));
    send_all(&mut d, link, &[rich_message(1).to_bytes()], false);
    let got = receive(&mut d, session, "sasl", 1, 1);
    assert_eq!(decode(&got[0].0), rich_message(1));
    d.close().unwrap_or_else(|e| panic!("{e}"));

    // PLAIN only: the broker offers ANONYMOUS alone, so our client gives up with a clear error.
    let plain = SaslClientConfig {
        mechanisms: vec![Symbol::from_static("PLAIN")],
        username: Some("user".into()),
        password: Some("pass".into()),
    };
    let mut config = ConnectionConfig::client("nucleon-sasl-plain");
    config.sasl_client = Some(plain);
    let mut d = Driver::connect(broker.addr, config, BUDGET).unwrap_or_else(|e| panic!("{e}"));
    d.conn().open().expect("open");
    let error = wait(&mut d, "SASL to fail", |_, e| match e {
        Event::TransportError(error) => Some(error.clone()),
        Event::ConnectionRemoteOpen(_) | Event::Authenticated { .. } => {
            panic!("PLAIN succeeded against an ANONYMOUS-only broker: {e:?}")
        }
        _ => None,
    });
    assert_eq!(
        error.condition,
        ErrorCondition::UnauthorizedAccess,
        "{error:?}"
    );
    assert!(
        error
            .description
            .as_deref()
            .is_some_and(|d| d.contains("ANONYMOUS")),
        "the error should name what the server offers: {error:?}"
    );
    wait(&mut d, "the transport to close", |_, e| {
        matches!(e, Event::TransportClosed).then_some(())
    });
}

// ---------------------------------------------------------------------------------------------------------------
// For python-qpid-proton clients (we are the server)
// ---------------------------------------------------------------------------------------------------------------

/// A server configuration that admits SASL ANONYMOUS (what Proton's clients do by default) and clients that
/// skip SASL.
fn server_config(name: &str) -> ConnectionConfig {
    let mut config = ConnectionConfig::server(format!("nucleon-{name}"));
    config.sasl_server = Some(SaslServerConfig {
        authenticator: Arc::new(PlainAuthenticator::anonymous()),
        allow_skip: true,
    });
    config
}

fn sasl_server(auth: PlainAuthenticator) -> Option<SaslServerConfig> {
    Some(SaslServerConfig {
        authenticator: Arc::new(auth),
        allow_skip: false,
    })
}

/// What the server saw of a Python sender.
#[derive(Default)]
struct Served {
    messages: Vec<Message>,
    authenticated: Option<(Symbol, Option<String>)>,
    remote_idle_timeout: Option<u32>,
    errors: Vec<Error>,
}

/// Serves a Proton sender: answers its open, begin and attach, keeps `credit` credits outstanding, gives each
/// message the outcome `outcome(message)` (settling it), and closes when the client closes.
fn serve_sender(
    d: &mut Driver,
    credit: u32,
    outcome: impl Fn(&Message) -> DeliveryState,
) -> Result<Served, String> {
    let mut served = Served::default();
    d.run_until("the Proton sender to finish and close", |conn, e| {
        answer_peer(conn, e).expect("answer the client");
        match e {
            Event::Authenticated { mechanism, user } => {
                served.authenticated = Some((mechanism.clone(), user.clone()));
            }
            Event::ConnectionRemoteOpen(open) => served.remote_idle_timeout = open.idle_time_out,
            Event::LinkRemoteAttach(link) => {
                assert_eq!(conn.link_config(*link).map(|c| c.role), Ok(Role::Receiver));
                conn.add_credit(*link, credit).expect("credit");
            }
            Event::Delivery {
                delivery,
                payload,
                settled,
                ..
            } => {
                assert!(!settled, "Proton's clients send unsettled by default");
                let message = decode(payload);
                conn.disposition(*delivery, Some(outcome(&message)), true)
                    .expect("disposition");
                served.messages.push(message);
                let left = conn.credit(delivery.link).expect("our receiver");
                if left <= credit / 2 {
                    conn.add_credit(delivery.link, credit - left)
                        .expect("more credit");
                }
            }
            Event::TransportError(error) => served.errors.push(error.clone()),
            Event::ConnectionRemoteClose(_) => {
                let _ = conn.close(None);
            }
            Event::TransportClosed => return Some(()),
            _ => {}
        }
        None
    })
    .map_err(|e| e.to_string())?;
    Ok(served)
}

fn accepted(_: &Message) -> DeliveryState {
    DeliveryState::Accepted(Accepted {})
}

fn check_rich_messages(messages: &[Message], count: u32) {
    assert_eq!(messages.len(), count as usize, "messages received");
    for (i, m) in (0..count).zip(messages) {
        assert_eq!(
            m,
            &rich_message(i),
            "message {i} from Python differs from rich_message({i})"
        );
    }
}

#[test]
fn python_sender_sees_our_accept_reject_and_release() {
    const N: u32 = 10;
    let rejection = Error::new(
        ErrorCondition::PreconditionFailed,
        "nucleon rejects message 3",
    );
    let outcome = |m: &Message| match index_of(m).expect("an index property") {
        3 => DeliveryState::Rejected(Rejected {
            error: Some(rejection.clone()),
        }),
        6 => DeliveryState::Released(Released {}),
        _ => DeliveryState::Accepted(Accepted {}),
    };
    let (served, out) = with_python_client(
        "client_send.py",
        &["outcomes", &N.to_string()],
        server_config("outcomes"),
        |d| serve_sender(d, N, outcome),
    );
    out.assert_success();
    assert!(
        served.errors.is_empty(),
        "transport errors: {:?}",
        served.errors
    );
    check_rich_messages(&served.messages, N);
    let outcomes: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("outcome "))
        .collect();
    let expected: Vec<String> = (0..N)
        .map(|i| match i {
            3 => "outcome 3 REJECTED amqp:precondition-failed nucleon rejects message 3".to_owned(),
            6 => "outcome 6 RELEASED".to_owned(),
            _ => format!("outcome {i} ACCEPTED"),
        })
        .collect();
    assert_eq!(outcomes, expected, "outcomes the Python sender saw:\n{out}");
}

/// Serves a Proton receiver: answers its open, begin and attach, sends `messages` (unsettled) as its credit
/// allows, and closes when the client closes. Returns how many deliveries the client accepted and settled.
fn serve_receiver(d: &mut Driver, messages: &[Bytes]) -> Result<usize, String> {
    let mut sent = 0;
    let mut accepted_count = 0;
    let mut sender = None;
    d.run_until("the Proton receiver to finish and close", |conn, e| {
        answer_peer(conn, e).expect("answer the client");
        match e {
            Event::LinkRemoteAttach(link) => {
                assert_eq!(conn.link_config(*link).map(|c| c.role), Ok(Role::Sender));
                sender = Some(*link);
            }
            Event::RemoteDisposition { state, settled, .. } => {
                assert_eq!(state, &Some(DeliveryState::Accepted(Accepted {})));
                if *settled {
                    accepted_count += 1;
                }
            }
            Event::ConnectionRemoteClose(_) => {
                let _ = conn.close(None);
            }
            Event::TransportClosed => return Some(()),
            _ => {}
        }
        if let Some(link) = sender {
            while sent < messages.len() && conn.credit(link).unwrap_or(0) > 0 {
                conn.send(link, tag(sent as u32), messages[sent].clone(), false)
                    .expect("send with credit");
                sent += 1;
            }
        }
        None
    })
    .map_err(|e| e.to_string())?;
    Ok(accepted_count)
}

#[test]
fn python_receiver_gets_our_messages() {
    const N: u32 = 20;
    let messages: Vec<Bytes> = (0..N).map(|i| rich_message(i).to_bytes()).collect();
    let (accepted_count, out) = with_python_client(
        "client_recv.py",
        &["from-nucleon", &N.to_string(), "--credit", "5"],
        server_config("to-python"),
        |d| serve_receiver(d, &messages),
    );
    out.assert_success();
    let lines = out.lines();
    for i in 0..N {
        assert!(
            lines.contains(&format!("ok {i}").as_str()),
            "message {i} not confirmed:\n{out}"
        );
    }
    assert!(lines.contains(&format!("received {N}").as_str()), "{out}");
    assert_eq!(
        accepted_count, N as usize,
        "accepted (and settled) outcomes from Python"
    );
}

/// The data section of a large test message: the same bytes as `interop.large_body(size)`.
fn large_body(size: usize) -> Vec<u8> {
    (0..size).map(|j| (j % 251) as u8).collect()
}

#[test]
fn python_receiver_gets_a_5_mib_message_in_small_frames() {
    // The Python client's max-frame-size is 16 KiB, so we must split the message into 320-odd frames (and
    // respect Proton's session window while doing so).
    const SIZE: usize = 5 * 1024 * 1024;
    let messages = vec![Message::builder().data(large_body(SIZE)).build().to_bytes(); 2];
    let size = SIZE.to_string();
    let (accepted_count, out) = with_python_client(
        "client_recv.py",
        &["large", "2", "--large", &size, "--max-frame", "16384"],
        server_config("large-to-python"),
        |d| {
            let accepted = serve_receiver(d, &messages)?;
            let max_frame = d.connection().remote_max_frame_size();
            Ok((accepted, max_frame))
        },
    );
    out.assert_success();
    assert_eq!(
        accepted_count.1, 16384,
        "the Python client's max-frame-size"
    );
    assert!(out.lines().contains(&"ok 1"), "{out}");
    assert_eq!(
        accepted_count.0, 2,
        "accepted (and settled) outcomes from Python"
    );
}

#[test]
fn python_sasl_plain_with_good_credentials() {
    let mut config = server_config("plain");
    config.sasl_server = sasl_server(PlainAuthenticator::new([("alice", "secret")]));
    let (served, out) = with_python_client(
        "client_send.py",
        &[
            "plain",
            "2",
            "--mechs",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "secret",
        ],
        config,
        |d| serve_sender(d, 10, accepted),
    );
    out.assert_success();
    assert_eq!(
        served.authenticated,
        Some((Symbol::from_static("PLAIN"), Some("alice".into())))
    );
    check_rich_messages(&served.messages, 2);
}

#[test]
fn python_sasl_plain_with_bad_credentials_is_refused() {
    let mut config = server_config("plain-bad");
    config.sasl_server = sasl_server(PlainAuthenticator::new([("alice", "secret")]));
    let (served, out) = with_python_client(
        "client_send.py",
        &[
            "plain-bad",
            "1",
            "--mechs",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "wrong",
            "--expect-auth-failure",
        ],
        config,
        |d| serve_sender(d, 10, accepted),
    );
    out.assert_success();
    assert!(
        out.lines()
            .iter()
            .any(|l| l.starts_with("auth-failed amqp:unauthorized-access")),
        "the Python client should report the refusal:\n{out}"
    );
    assert_eq!(served.authenticated, None);
    assert!(served.messages.is_empty());
    assert!(
        served
            .errors
            .iter()
            .any(|e| e.condition == ErrorCondition::UnauthorizedAccess),
        "our server should report the refusal: {:?}",
        served.errors
    );
}

#[test]
fn python_sasl_anonymous() {
    let mut config = server_config("anonymous");
    config.sasl_server = sasl_server(PlainAuthenticator::anonymous());
    let (served, out) = with_python_client(
        "client_send.py",
        &["anonymous", "1", "--mechs", "ANONYMOUS"],
        config,
        |d| serve_sender(d, 10, accepted),
    );
    out.assert_success();
    assert_eq!(
        served.authenticated,
        Some((Symbol::from_static("ANONYMOUS"), Some("anonymous".into())))
    );
    check_rich_messages(&served.messages, 1);
}

/// How long the Python clients stay quiet in the heartbeat tests: three times the 1 s idle timeout.
const QUIET: Duration = Duration::from_secs(3);

/// Serves a Python sender that stays quiet for [`QUIET`] after the open; returns what was served, the time
/// from the open exchange to the client's first frame after it, and the bytes (in, out) in that time.
fn serve_quiet_sender(d: &mut Driver) -> Result<(Served, Duration, (u64, u64)), String> {
    let mut served = Served::default();
    wait(d, "the client's open", |conn, e| {
        answer_peer(conn, e).expect("answer open");
        match e {
            Event::ConnectionRemoteOpen(open) => {
                served.remote_idle_timeout = open.idle_time_out;
                Some(())
            }
            _ => None,
        }
    });
    // Write our open, then measure the quiet period: until the client's begin.
    d.run_for(Duration::ZERO, |_, _| {})
        .map_err(|e| e.to_string())?;
    let (in0, out0) = d.bytes();
    let quiet_from = Instant::now();
    wait(d, "the client's begin after its quiet period", |conn, e| {
        answer_peer(conn, e).expect("answer begin");
        matches!(e, Event::SessionRemoteBegin(_)).then_some(())
    });
    let quiet = quiet_from.elapsed();
    let (in1, out1) = d.bytes();
    let rest = serve_sender(d, 10, accepted)?;
    served.messages = rest.messages;
    served.errors = rest.errors;
    Ok((served, quiet, (in1 - in0, out1 - out0)))
}

#[test]
fn we_heartbeat_a_python_client_with_a_1s_idle_timeout() {
    let quiet = format!("{}", QUIET.as_secs_f64());
    let ((served, quiet_for, (_, written)), out) = with_python_client(
        "client_send.py",
        &["heartbeat", "1", "--idle-timeout", "1", "--quiet", &quiet],
        server_config("heartbeat"),
        serve_quiet_sender,
    );
    out.assert_success();
    check_rich_messages(&served.messages, 1);
    assert!(
        served.errors.is_empty(),
        "transport errors: {:?}",
        served.errors
    );
    let timeout = served
        .remote_idle_timeout
        .expect("the Python client advertises an idle timeout");
    assert!(timeout > 0 && timeout <= 1000, "idle-time-out {timeout} ms");
    assert!(
        quiet_for >= QUIET - Duration::from_millis(300),
        "the client was quiet for only {quiet_for:?}"
    );
    // While the client was quiet we wrote only empty frames (8 bytes each): at least one per idle timeout, or
    // Proton would have closed the connection, and about one per half idle timeout, which is what we aim for.
    assert_eq!(
        written % 8,
        0,
        "we wrote {written} bytes while the client was quiet: not just empty frames"
    );
    let beats = written / 8;
    let quiet_ms = quiet_for.as_millis() as u64;
    let (least, most) = (
        quiet_ms / u64::from(timeout),
        quiet_ms / (u64::from(timeout) / 2) + 1,
    );
    eprintln!("Proton's idle-time-out {timeout} ms: we sent {beats} heartbeats in {quiet_for:?}");
    assert!(
        (least..=most).contains(&beats),
        "{beats} heartbeats in {quiet_for:?} for an idle timeout of {timeout} ms (expected {least}..={most})"
    );
}

#[test]
fn python_client_heartbeats_our_1s_idle_timeout() {
    let mut config = server_config("idle");
    config.idle_timeout = Some(Duration::from_secs(1));
    let quiet = format!("{}", QUIET.as_secs_f64());
    let ((served, quiet_for, (read, _)), out) = with_python_client(
        "client_send.py",
        &["idle", "1", "--quiet", &quiet],
        config,
        serve_quiet_sender,
    );
    out.assert_success();
    // We advertise half the timeout we enforce (AMQP 1.0 §2.4.5), so Proton heartbeats every 250 ms.
    assert!(
        out.lines().contains(&"opened remote-idle-timeout=0.5"),
        "the client should see half our 1 s idle timeout:\n{out}"
    );
    check_rich_messages(&served.messages, 1);
    assert!(
        served.errors.is_empty(),
        "transport errors (an idle timeout?): {:?}",
        served.errors
    );
    assert!(
        quiet_for >= QUIET - Duration::from_millis(300),
        "the client was quiet for only {quiet_for:?}"
    );
    // Proton kept the connection alive with empty frames; the first frame after the quiet period (begin) is in
    // `read` too, so count only whole empty frames below it.
    eprintln!("Proton sent {read} bytes in {quiet_for:?} of quiet (empty frames, then its begin)");
    assert!(
        read >= 3 * 8,
        "only {read} bytes from Proton in {quiet_for:?}: no heartbeats"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Proton's C clients (we are the server)
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn c_send_and_receive_examples_against_our_server() {
    const N: u32 = 100;
    let n = N.to_string();
    // `send` sends {"sequence": n} with message-id n, for n in 1..=N, as our credit (10 at a time) allows.
    let (served, out) = with_client(
        |l| c_client(l, "send", &["from-c", &n]),
        server_config("c-send"),
        |d| serve_sender(d, 10, accepted),
    );
    out.assert_success();
    assert!(
        out.lines().contains(&"100 messages sent and acknowledged"),
        "{out}"
    );
    assert_eq!(served.messages.len(), N as usize);
    for (n, m) in (1..=N).zip(&served.messages) {
        let mut body = Map::new();
        body.insert("sequence", Value::Int(n as i32));
        assert_eq!(m.body_value(), Some(&Value::Map(body)), "message {n}");
        assert_eq!(
            m.message_id(),
            Some(&MessageId::Ulong(n.into())),
            "message {n}"
        );
    }

    // `receive` grants N credits, prints each body, and accepts each message.
    let messages: Vec<Bytes> = (0..N).map(|i| numbered(i).to_bytes()).collect();
    let (accepted_count, out) = with_client(
        |l| c_client(l, "receive", &["to-c", &n]),
        server_config("c-receive"),
        |d| serve_receiver(d, &messages),
    );
    out.assert_success();
    let bodies: Vec<String> = (0..N).map(|i| format!("\"message {i}\"")).collect();
    let printed: Vec<&str> = out.lines().into_iter().take(N as usize).collect();
    assert_eq!(printed, bodies, "{out}");
    assert!(out.lines().contains(&"100 messages received"), "{out}");
    assert_eq!(accepted_count, N as usize);
}
