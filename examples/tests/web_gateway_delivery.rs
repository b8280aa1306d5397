//! `web_gateway` delivers at least once over HTTP and shares one AMQP connection: clients that go away
//! (a killed event-stream reader, a GET whose client closes before reading) lose no message, explicit
//! acknowledgements (`ack=manual`) settle exactly what they name and the rest comes back at its deadline,
//! event streams are capped, and however many requests run, the broker sees one connection.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{Container, ListenOptions};
use serde_json::{json, Value as Json};
use support::{http_request, start_open_gateway, EventStream, HttpReply, Running};

const WAIT: Duration = Duration::from_secs(20);

/// A running gateway in the open mode (the security layer has its own tests), killed on drop.
struct Gateway {
    _process: Running,
    http: String,
}

impl Gateway {
    fn start(extra: &[&str]) -> Gateway {
        let (process, http) = start_open_gateway(extra);
        Gateway {
            _process: process,
            http,
        }
    }

    fn post(&self, address: &str, n: i64) {
        let reply = http_request(
            &self.http,
            "POST",
            &format!("/queues/{address}/messages"),
            &[("Content-Type", "application/json")],
            json!({ "n": n }).to_string().as_bytes(),
        );
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    fn get(&self, address: &str, query: &str) -> HttpReply {
        http_request(
            &self.http,
            "GET",
            &format!("/queues/{address}/messages?{query}"),
            &[],
            b"",
        )
    }

    /// The messages of a GET (asserting 200).
    fn messages(&self, address: &str, query: &str) -> Vec<Json> {
        let reply = self.get(address, query);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        match reply.json()["messages"].take() {
            Json::Array(m) => m,
            other => panic!("a messages array, got {other}"),
        }
    }

    /// GETs until every number in `want` came back (bounded by [`WAIT`]); returns every number seen.
    fn collect(&self, address: &str, want: &BTreeSet<i64>) -> BTreeSet<i64> {
        let deadline = Instant::now() + WAIT;
        let mut got = BTreeSet::new();
        while !want.is_subset(&got) {
            assert!(
                Instant::now() < deadline,
                "only {got:?} of {want:?} came back"
            );
            for m in self.messages(address, "max=100&timeout_ms=500") {
                got.insert(number(&m));
            }
        }
        got
    }

    fn ack(&self, address: &str, body: &Json) -> HttpReply {
        http_request(
            &self.http,
            "POST",
            &format!("/queues/{address}/ack"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }
}

fn number(m: &Json) -> i64 {
    m["body"]["n"]
        .as_i64()
        .unwrap_or_else(|| panic!("a numbered message, got {m}"))
}

fn numbers(range: std::ops::Range<i64>) -> BTreeSet<i64> {
    range.collect()
}

#[test]
fn a_stream_reader_killed_mid_stream_loses_no_message() {
    let gw = Gateway::start(&[]);
    let mut events = EventStream::open(&gw.http, "/queues/live/stream");
    assert_eq!(events.status, 200);
    for i in 0..3 {
        gw.post("live", i);
    }
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let m: Json = serde_json::from_str(&events.next_data(WAIT)).expect("JSON events");
        seen.insert(number(&m));
    }
    // Killed: its socket closes without a word, and what is posted next finds its link still there.
    drop(events);
    for i in 3..8 {
        gw.post("live", i);
    }
    let got = gw.collect("live", &numbers(3..8));
    let all: BTreeSet<i64> = seen.union(&got).copied().collect();
    assert_eq!(all, numbers(0..8), "every message reached a reader");
}

/// Sends `GET path` and closes the socket before reading anything.
fn get_and_go(http: &str, path: &str) {
    let mut s = std::net::TcpStream::connect(http).expect("connects");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {http}\r\n\r\n").expect("writes");
    s.shutdown(Shutdown::Both).expect("shuts down");
}

#[test]
fn a_get_whose_client_goes_away_before_reading_loses_no_message() {
    let gw = Gateway::start(&[]);
    // Messages waiting: the GET takes them at once, and writes its answer to a client that is gone.
    for i in 0..3 {
        gw.post("q", i);
    }
    for _ in 0..5 {
        get_and_go(&gw.http, "/queues/q/messages?max=10&timeout_ms=0");
    }
    // A GET waiting for messages when its client goes: those posted meanwhile are not lost either.
    get_and_go(&gw.http, "/queues/q/messages?max=10&timeout_ms=2000");
    for i in 3..6 {
        gw.post("q", i);
    }
    let got = gw.collect("q", &numbers(0..6));
    assert_eq!(got, numbers(0..6));
}

#[test]
fn manual_acknowledgements_settle_what_they_name_and_the_rest_comes_back() {
    let gw = Gateway::start(&[]);
    for i in 0..4 {
        gw.post("work", i);
    }
    let given = gw.messages(
        "work",
        "max=4&timeout_ms=5000&ack=manual&ack_timeout_ms=1500",
    );
    assert_eq!(given.len(), 4, "{given:?}");
    let id = |m: &Json| {
        m["delivery_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a delivery id in {m}"))
            .to_owned()
    };
    let done: Vec<&Json> = given.iter().filter(|m| number(m) < 2).collect();
    let reply = gw.ack(
        "work",
        &json!({ "delivery_ids": done.iter().map(|m| id(m)).collect::<Vec<_>>(), "outcome": "accepted" }),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["settled"], json!(2));
    // An id of another address, or settled already, is not settled (again).
    let reply = gw.ack(
        "elsewhere",
        &json!({ "delivery_ids": [id(given.iter().find(|m| number(m) == 2).expect("2"))] }),
    );
    assert_eq!(reply.json()["settled"], json!(0));
    let reply = gw.ack("work", &json!({ "delivery_ids": [id(done[0])] }));
    assert_eq!(reply.json()["unknown"], json!([id(done[0])]));
    assert_eq!(
        gw.ack("work", &json!({ "delivery_ids": [], "outcome": "maybe" }))
            .status,
        400
    );
    // Nothing else is delivered while they wait; past their deadline, the two not acknowledged come back.
    let got = gw.collect("work", &numbers(2..4));
    assert_eq!(
        got,
        numbers(2..4),
        "the acknowledged ones are gone for good"
    );
}

#[test]
fn streams_beyond_max_streams_get_503() {
    let gw = Gateway::start(&["--max-streams", "1", "--keep-alive-secs", "1"]);
    let first = EventStream::open(&gw.http, "/queues/a/stream");
    assert_eq!(first.status, 200);
    let second = http_request(&gw.http, "GET", "/queues/b/stream", &[], b"");
    assert_eq!(second.status, 503);
    drop(first);
    // Its place comes back once the gateway sees it gone (bounded retries).
    let deadline = Instant::now() + WAIT;
    loop {
        let again = EventStream::open(&gw.http, "/queues/b/stream");
        if again.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fifty_concurrent_requests_share_one_broker_connection() {
    // A broker in this process, to count the gateway's connections.
    let (tx, rx) = std::sync::mpsc::channel();
    let peer = std::thread::spawn(move || {
        let container = Container::builder().threads(2).auto_stop(false).build();
        let handle = container.handle();
        let broker = Broker::new(BrokerOptions::default());
        let port = broker
            .listen(&handle, "127.0.0.1:0", ListenOptions::default())
            .expect("the broker listens")
            .port();
        tx.send((handle, broker, port)).expect("the test waits");
        container.run()
    });
    let (handle, broker, port) = rx.recv_timeout(WAIT).expect("the broker listens in time");
    let gw = Gateway::start(&["--broker", &format!("amqp://127.0.0.1:{port}")]);
    // 10 event streams held open, and 40 POSTs and GETs at once on 20 addresses.
    let streams: Vec<EventStream> = (0..10)
        .map(|i| EventStream::open(&gw.http, &format!("/queues/s{i}/stream")))
        .collect();
    assert!(streams.iter().all(|s| s.status == 200));
    std::thread::scope(|scope| {
        for i in 0..40 {
            let http = gw.http.as_str();
            scope.spawn(move || {
                let address = format!("a{}", i % 20);
                let reply = if i < 20 {
                    http_request(
                        http,
                        "POST",
                        &format!("/queues/{address}/messages"),
                        &[("Content-Type", "application/json")],
                        b"1",
                    )
                } else {
                    http_request(
                        http,
                        "GET",
                        &format!("/queues/{address}/messages?max=1&timeout_ms=2000"),
                        &[],
                        b"",
                    )
                };
                assert!(
                    reply.status == 200 || reply.status == 201,
                    "{}",
                    reply.status
                );
            });
        }
    });
    let connections = broker.connections();
    assert_eq!(
        connections.len(),
        1,
        "the broker saw {} connections: {connections:?}",
        connections.len()
    );
    let links = connections[0].consumers + connections[0].producers;
    assert!(links >= 10, "the streams' links are on it: {links}");
    drop(streams);
    drop(gw);
    handle.stop();
    peer.join()
        .expect("the broker's thread ends")
        .expect("the broker's container ran");
}

#[test]
fn a_manual_get_does_not_hide_the_messages_that_come_after_it() {
    let gw = Gateway::start(&[]);
    gw.post("jobs", 0);
    // It asks for 100 and gets the one there is; its link stays open while that one waits for its ack.
    let given = gw.messages(
        "jobs",
        "max=100&timeout_ms=0&ack=manual&ack_timeout_ms=300000",
    );
    assert_eq!(given.len(), 1);
    for i in 1..6 {
        gw.post("jobs", i);
    }
    // At most one later message waits on its link (it asks for one at a time); the others are for others.
    let got = gw.messages("jobs", "max=10&timeout_ms=2000");
    assert!(
        got.len() >= 4,
        "only {} of the 5 later messages: {got:?}",
        got.len()
    );
}

#[test]
fn receiver_links_are_capped_so_one_client_cannot_take_them_all() {
    let gw = Gateway::start(&[]);
    // Each manual GET keeps its link while its delivery waits: 180 of them take every receiver link.
    for i in 0..180 {
        gw.post("hog", i);
        let reply = gw.get(
            "hog",
            "max=1&timeout_ms=5000&ack=manual&ack_timeout_ms=300000",
        );
        assert_eq!(reply.status, 200, "GET {i}");
    }
    assert_eq!(gw.get("hog", "max=1&timeout_ms=0").status, 503);
    assert_eq!(
        http_request(&gw.http, "GET", "/queues/other/stream", &[], b"").status,
        503
    );
    // Sending still works: senders have links of their own.
    gw.post("other", 1);
}
