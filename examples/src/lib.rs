//! Helpers shared by the example binaries: URL checking for clap, message bodies as text, and the slot
//! where a handler leaves the reason its program failed.

use std::sync::{Arc, Mutex};

use nucleon::{Address, Body, Message, Value};

/// Checks an AMQP URL for clap (`value_parser`): the URL as given, or why it does not parse.
pub fn parse_url(s: &str) -> Result<String, String> {
    Address::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A message body as text: a string as is, any other value in AMQP notation.
pub fn body_text(message: &Message) -> String {
    match message.body() {
        Body::Value(Value::String(s)) => s.clone(),
        Body::Value(v) => v.to_string(),
        Body::Data(sections) => sections
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect(),
        Body::Sequence(sections) => format!("{sections:?}"),
        Body::Empty => String::new(),
    }
}

/// Where a handler leaves the reason the program failed, for `main`.
pub type Failure = Arc<Mutex<Option<String>>>;
