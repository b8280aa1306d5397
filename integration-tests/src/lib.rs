//! Cross-crate and interop tests for nucleon; the tests live in `tests/`.
//!
//! The library part holds what those tests share:
//!
//! * [`broker`]: what the in-process broker's tests share (a broker on a free port, bounded facade calls).
//! * [`client`]: our async facade's clients as the interop tests drive them (bounded sends and receives),
//!   the tests' container, and our broker on a free loopback port.
//! * [`corpus`]: the interop corpus, messages using every AMQP type, field and body kind.
//! * [`driver`]: a blocking, runtime-free driver that runs a `nucleon_protocol` engine over a real TCP socket,
//!   used by `tests/engine_interop.rs` to talk to Qpid Proton.
//! * [`python`]: Debian's Python with Qpid Proton, and the check that it is there.
//! * [`peers`]: third-party peers (RabbitMQ, ...) as child processes tied to the test process.

pub mod broker;
pub mod certs;
pub mod client;
pub mod corpus;
pub mod driver;
pub mod peers;
pub mod python;
