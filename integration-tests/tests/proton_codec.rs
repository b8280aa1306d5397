//! Cross-check of nucleon's message codec against Apache Qpid Proton's.
//!
//! `integration-tests/proton/corpus.py` builds a corpus of AMQP 1.0 messages with Proton 0.37 (Debian's
//! `python3-qpid-proton`). For every entry NAME it writes the bytes Proton encodes (`NAME.bin`) and a typed JSON
//! description of exactly what those bytes hold (`NAME.json`, read back with `proton.Data`; the format is
//! documented in the script's docstring and in `integration-tests/proton/README.md`).
//!
//! For every corpus entry this test proves:
//!
//! 1. **Proton to nucleon.** [`Message::decode`] accepts Proton's bytes and yields exactly the message the JSON
//!    describes: which sections are present; every header and properties field, with its AMQP type (a ulong
//!    message-id is not a string one); both annotation maps and the application properties, with entry order
//!    and key and value types; and the body kind and contents. Values are compared by type and exact value
//!    (float bits, so NaN payloads and `-0.0` count) through nested lists, maps, arrays (element type and
//!    descriptor) and described values. The decoded message also hands back Proton's bytes untouched.
//! 2. **nucleon to nucleon.** After [`Message::forget_encoded`] the message is encoded afresh from its sections.
//!    `encoded_size` is exact, and the fresh bytes decode back to an equal message.
//! 3. **nucleon to Proton.** The fresh bytes are written as `NAME.out.bin`, and `corpus.py check` decodes each
//!    of them with Proton and compares it with the corpus entry, strictly typed, both through Proton's `Message`
//!    API and section by section on the wire.
//!
//! The corpus must hold at least [`MIN_MESSAGES`] messages and use every AMQP type at least once, so an empty or
//! shrunken corpus cannot pass. The encodings may differ byte for byte: Proton writes `list32`/`map32`/`array32`
//! where nucleon picks the 8-bit forms, and it writes header and properties sections even when they are empty.
//! The test never skips. Without `/usr/bin/python3` and Proton's Python binding it fails and says to run
//! `scripts/install-test-deps.sh`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nucleon_protocol::codec::{
    Array, Decimal128, Decimal32, Decimal64, Descriptor, Map, Symbol, Timestamp, Type, Uuid, Value,
};
use nucleon_protocol::frame::{Header, MessageId, Properties};
use nucleon_protocol::{Body, Encode, Message};
use serde_json::Value as Json;

/// Debian's Python, the only one that can import `proton` (a pyenv `python3` may come first on `PATH`).
const PYTHON: &str = "/usr/bin/python3";

/// The corpus has 27 messages; fewer than this means it was emptied or broken.
const MIN_MESSAGES: usize = 20;

/// Every type tag of the JSON format; the corpus must use each at least once.
const ALL_TAGS: &str = "null bool ubyte ushort uint ulong byte short int long float double decimal32 \
                        decimal64 decimal128 char timestamp uuid binary string symbol list map array described";

#[test]
fn proton_corpus_round_trips_through_nucleon() {
    let corpus = Corpus::locate();
    corpus.require_proton();
    let dir = fresh_dir();
    corpus.run_ok(&["gen"], &dir);

    let names = corpus_names(&dir);
    assert!(
        names.len() >= MIN_MESSAGES,
        "corpus.py gen wrote only {} messages to {} (expected at least {MIN_MESSAGES}): {names:?}",
        names.len(),
        dir.display()
    );

    let mut failures = Vec::new();
    let mut tags = BTreeSet::new();
    let mut written = Vec::new();
    let mut same_bytes = Vec::new();
    for name in &names {
        let outcome = cross_check(&dir, name, &mut tags);
        failures.extend(outcome.failures.into_iter().map(|f| format!("{name}: {f}")));
        if outcome.wrote_out {
            written.push(name.clone());
        }
        if outcome.same_bytes_as_proton {
            same_bytes.push(name.clone());
        }
    }

    let missing: Vec<_> = ALL_TAGS
        .split_whitespace()
        .filter(|t| !tags.contains(*t))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "corpus: no longer uses the AMQP type(s) {missing:?}, so they are not cross-checked"
        ));
    }

    if written.is_empty() {
        failures.push("no NAME.out.bin was written, so Proton checked nothing".into());
    } else {
        failures.extend(proton_check(&corpus, &dir, &written));
    }

    assert!(
        failures.is_empty(),
        "{} problem(s) cross-checking {} messages against Proton (files kept in {}):\n  {}",
        failures.len(),
        names.len(),
        dir.display(),
        failures.join("\n  ")
    );
    eprintln!(
        "proton_codec: {} messages cross-checked; nucleon's re-encoding is byte-identical to Proton's for {}: {:?}",
        names.len(),
        same_bytes.len(),
        same_bytes
    );
    // Everything passed: the files are of no further interest.
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------------------------
// Running corpus.py
// ---------------------------------------------------------------------------------------------------------------

/// Where `corpus.py` and the install script live.
struct Corpus {
    script: PathBuf,
    install: PathBuf,
}

impl Corpus {
    fn locate() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the integration-tests crate lives inside the repository");
        let corpus = Corpus {
            script: repo.join("integration-tests/proton/corpus.py"),
            install: repo.join("scripts/install-test-deps.sh"),
        };
        assert!(
            corpus.script.is_file(),
            "the Proton corpus script {} is missing",
            corpus.script.display()
        );
        corpus
    }

    /// Fails (never skips) with instructions when Debian's Python or Proton's binding is missing.
    fn require_proton(&self) {
        let advice = format!(
            "This test cross-checks nucleon against Qpid Proton and needs Debian's {PYTHON} with the \
             python3-qpid-proton package. Install them with `{}` and run the test again.",
            self.install.display()
        );
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} does not exist. {advice}"
        );
        // `-I` keeps the working directory off `sys.path`: from `integration-tests/`, `import proton` alone would
        // find the `proton/` folder there as a namespace package.
        let out = Command::new(PYTHON)
            .args(["-I", "-c", "from proton import Data, Message"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}. {advice}"));
        assert!(
            out.status.success(),
            "{PYTHON} cannot import the `proton` module ({}):\n{}\n{advice}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Runs `corpus.py ARGS... DIR`.
    fn run(&self, args: &[&str], dir: &Path) -> Output {
        Command::new(PYTHON)
            .arg(&self.script)
            .args(args)
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON} {}: {e}", self.script.display()))
    }

    /// Runs `corpus.py ARGS... DIR` and fails the test unless it succeeds.
    fn run_ok(&self, args: &[&str], dir: &Path) {
        let out = self.run(args, dir);
        assert!(
            out.status.success(),
            "corpus.py {} {} failed ({}):\n{}",
            args.join(" "),
            dir.display(),
            out.status,
            output_text(&out)
        );
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// A new, empty directory under Cargo's scratch directory for integration tests.
fn fresh_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("proton_codec-{}-{nanos}", std::process::id()));
    assert!(!dir.exists(), "{} already exists", dir.display());
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The corpus entries `gen` wrote: every `NAME.bin`, sorted.
fn corpus_names(dir: &Path) -> Vec<String> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|f| f.strip_suffix(".bin").map(str::to_owned))
        .filter(|n| !n.ends_with(".out"))
        .collect();
    names.sort();
    names
}

/// Runs `corpus.py check DIR` and returns its complaints: a failed run, or a written message it did not pass.
fn proton_check(corpus: &Corpus, dir: &Path, written: &[String]) -> Vec<String> {
    let out = corpus.run(&["check"], dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    let mut failures = Vec::new();
    if !out.status.success() {
        failures.push(format!(
            "corpus.py check {} (Proton decoding nucleon's encodings) failed ({}):\n{}",
            dir.display(),
            out.status,
            output_text(&out)
        ));
    }
    let unchecked: Vec<_> = written
        .iter()
        .filter(|n| !ok.contains(n.as_str()))
        .collect();
    if !unchecked.is_empty() && out.status.success() {
        failures.push(format!(
            "corpus.py check exited 0 but did not report `ok` for {unchecked:?}:\n{}",
            output_text(&out)
        ));
    }
    failures
}

// ---------------------------------------------------------------------------------------------------------------
// One corpus message
// ---------------------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Outcome {
    failures: Vec<String>,
    wrote_out: bool,
    same_bytes_as_proton: bool,
}

/// Decodes `NAME.bin`, compares it with `NAME.json`, re-encodes it and writes `NAME.out.bin`.
fn cross_check(dir: &Path, name: &str, tags: &mut BTreeSet<String>) -> Outcome {
    let mut outcome = Outcome::default();
    let read = |ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    let proton_bytes = Bytes::from(read("bin"));
    let json: Json = serde_json::from_slice(&read("json"))
        .unwrap_or_else(|e| panic!("{name}.json is not valid JSON: {e}"));
    collect_tags(&json, tags);

    let expected = match expected_message(&json) {
        Ok(m) => m,
        Err(e) => {
            outcome.failures.push(format!("{name}.json: {e}"));
            return outcome;
        }
    };

    // 1. Proton -> nucleon.
    let decoded = match Message::decode(proton_bytes.clone()) {
        Ok(m) => m,
        Err(e) => {
            outcome.failures.push(format!(
                "Message::decode rejects Proton's encoding: {e}\n    bytes: {}",
                hex_preview(&proton_bytes)
            ));
            return outcome;
        }
    };
    for d in message_diffs(&expected, &decoded) {
        outcome
            .failures
            .push(format!("decoding Proton's bytes: {d}"));
    }
    if decoded.encoded() != Some(&proton_bytes) || decoded.to_bytes() != proton_bytes {
        outcome
            .failures
            .push("a decoded, unmodified message does not hand back the bytes it came from".into());
    }

    // 2. nucleon -> nucleon, from the sections.
    let mut fresh = decoded.clone();
    fresh.forget_encoded();
    if fresh.encoded().is_some() {
        outcome
            .failures
            .push("forget_encoded() left the original bytes in place".into());
    }
    let ours = fresh.to_bytes();
    let size = Encode::encoded_size(&fresh);
    if size != ours.len() {
        outcome.failures.push(format!(
            "encoded_size() is {size} but the encoding has {} bytes",
            ours.len()
        ));
    }
    outcome.same_bytes_as_proton = ours == proton_bytes;
    match Message::decode(ours.clone()) {
        Ok(back) => {
            for d in message_diffs(&decoded, &back) {
                outcome
                    .failures
                    .push(format!("decoding nucleon's re-encoding: {d}"));
            }
        }
        Err(e) => outcome.failures.push(format!(
            "Message::decode rejects nucleon's own re-encoding: {e}\n    bytes: {}",
            hex_preview(&ours)
        )),
    }

    // 3. nucleon -> Proton happens in `corpus.py check`, on this file.
    let out = dir.join(format!("{name}.out.bin"));
    fs::write(&out, &ours).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    outcome.wrote_out = true;
    outcome
}

/// Adds every type tag (`"t"` and array `"elem"`) found anywhere in `json` to `tags`.
fn collect_tags(json: &Json, tags: &mut BTreeSet<String>) {
    match json {
        Json::Object(obj) => {
            for key in ["t", "elem"] {
                if let Some(Json::String(tag)) = obj.get(key) {
                    tags.insert(tag.clone());
                }
            }
            obj.values().for_each(|v| collect_tags(v, tags));
        }
        Json::Array(items) => items.iter().for_each(|v| collect_tags(v, tags)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Typed JSON -> Message
// ---------------------------------------------------------------------------------------------------------------

type Res<T> = Result<T, String>;

const HEADER_FIELDS: &str = "durable priority ttl first_acquirer delivery_count";

const PROPERTY_FIELDS: &str = "message_id user_id to subject reply_to correlation_id content_type \
                               content_encoding absolute_expiry_time creation_time group_id group_sequence \
                               reply_to_group_id";

const MESSAGE_KEYS: &str = "header delivery_annotations message_annotations properties \
                            application_properties body";

/// The message a typed JSON description describes.
fn expected_message(j: &Json) -> Res<Message> {
    exact_keys(j, MESSAGE_KEYS, "message")?;
    let mut m = Message::new();
    if let Some(h) = expected_header(get(j, "header", "message")?)? {
        *m.header_mut() = h;
    }
    if let Some(a) = section_map(j, "delivery_annotations")? {
        *m.delivery_annotations_mut() = a;
    }
    if let Some(a) = section_map(j, "message_annotations")? {
        *m.message_annotations_mut() = a;
    }
    if let Some(p) = expected_properties(get(j, "properties", "message")?)? {
        *m.properties_mut() = p;
    }
    if let Some(a) = section_map(j, "application_properties")? {
        *m.application_properties_mut() = a;
    }
    m.set_body(expected_body(get(j, "body", "message")?)?);
    Ok(m)
}

/// The header: absent for JSON null; a null field is the spec's default, which nucleon's [`Header`] holds
/// as a plain value (an absent field and one at its default are the same thing).
fn expected_header(j: &Json) -> Res<Option<Header>> {
    if j.is_null() {
        return Ok(None);
    }
    exact_keys(j, HEADER_FIELDS, "header")?;
    let d = Header::default();
    let s = "header";
    Ok(Some(Header {
        durable: opt(j, "durable", s, bool_of)?.unwrap_or(d.durable),
        priority: opt(j, "priority", s, int)?.unwrap_or(d.priority),
        ttl: opt(j, "ttl", s, int)?,
        first_acquirer: opt(j, "first_acquirer", s, bool_of)?.unwrap_or(d.first_acquirer),
        delivery_count: opt(j, "delivery_count", s, int)?.unwrap_or(d.delivery_count),
    }))
}

/// The properties: absent for JSON null; a null field is `None`, an empty string or binary is not.
fn expected_properties(j: &Json) -> Res<Option<Properties>> {
    if j.is_null() {
        return Ok(None);
    }
    exact_keys(j, PROPERTY_FIELDS, "properties")?;
    let s = "properties";
    let string = |v: &Json, p: &str| str_of(v, p).map(str::to_owned);
    let symbol = |v: &Json, p: &str| str_of(v, p).map(|s| Symbol::from(s.to_owned()));
    let time = |v: &Json, p: &str| int(v, p).map(Timestamp);
    let binary = |v: &Json, p: &str| hex_bytes(str_of(v, p)?, p).map(Bytes::from);
    Ok(Some(Properties {
        message_id: opt(j, "message_id", s, message_id)?,
        user_id: opt(j, "user_id", s, binary)?,
        to: opt(j, "to", s, string)?,
        subject: opt(j, "subject", s, string)?,
        reply_to: opt(j, "reply_to", s, string)?,
        correlation_id: opt(j, "correlation_id", s, message_id)?,
        content_type: opt(j, "content_type", s, symbol)?,
        content_encoding: opt(j, "content_encoding", s, symbol)?,
        absolute_expiry_time: opt(j, "absolute_expiry_time", s, time)?,
        creation_time: opt(j, "creation_time", s, time)?,
        group_id: opt(j, "group_id", s, string)?,
        group_sequence: opt(j, "group_sequence", s, int)?,
        reply_to_group_id: opt(j, "reply_to_group_id", s, string)?,
    }))
}

/// A message-id or correlation-id: a typed ulong, uuid, binary or string value.
fn message_id(j: &Json, path: &str) -> Res<MessageId> {
    match to_value(j, path)? {
        Value::Ulong(v) => Ok(MessageId::Ulong(v)),
        Value::Uuid(v) => Ok(MessageId::Uuid(v)),
        Value::Binary(v) => Ok(MessageId::Binary(v)),
        Value::String(v) => Ok(MessageId::String(v)),
        other => Err(format!(
            "{path}: a {} is not a message id",
            type_label(&other)
        )),
    }
}

/// An annotations or application-properties section: absent for JSON null, else a typed map.
fn section_map(msg: &Json, key: &str) -> Res<Option<Map>> {
    let j = get(msg, key, "message")?;
    if j.is_null() {
        return Ok(None);
    }
    match to_value(j, key)? {
        Value::Map(m) => Ok(Some(m)),
        other => Err(format!(
            "{key}: expected a map, got a {}",
            type_label(&other)
        )),
    }
}

fn expected_body(j: &Json) -> Res<Body> {
    let kind = str_of(get(j, "kind", "body")?, "body.kind")?;
    if kind == "none" {
        return Ok(Body::Empty);
    }
    let v = get(j, "v", "body")?;
    match kind {
        "value" => Ok(Body::Value(to_value(v, "body")?)),
        "data" => array_of(v, "body")?
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let p = format!("body.data[{i}]");
                hex_bytes(str_of(d, &p)?, &p).map(Bytes::from)
            })
            .collect::<Res<_>>()
            .map(Body::Data),
        "sequence" => array_of(v, "body")?
            .iter()
            .enumerate()
            .map(|(i, s)| values(s, &format!("body.sequence[{i}]")))
            .collect::<Res<_>>()
            .map(Body::Sequence),
        other => Err(format!("body.kind: unknown body kind {other:?}")),
    }
}

/// Converts a typed JSON value (`{"t": TYPE, "v": ...}`, arrays, described values) to a [`Value`].
fn to_value(j: &Json, path: &str) -> Res<Value> {
    let t = str_of(get(j, "t", path)?, &format!("{path}.t"))?;
    match t {
        "array" => return to_array(j, path).map(Value::Array),
        "described" => {
            exact_keys(j, "t d v", path)?;
            let descriptor = descriptor(get(j, "d", path)?, &format!("{path}.descriptor"))?;
            let value = to_value(get(j, "v", path)?, &format!("{path}.value"))?;
            return Ok(Value::described(descriptor, value));
        }
        _ => exact_keys(j, "t v", path)?,
    }
    let v = get(j, "v", path)?;
    Ok(match t {
        "null" if v.is_null() => Value::Null,
        "null" => return Err(format!("{path}: a null holding {v}")),
        "bool" => Value::Bool(bool_of(v, path)?),
        "ubyte" => Value::Ubyte(int(v, path)?),
        "ushort" => Value::Ushort(int(v, path)?),
        "uint" => Value::Uint(int(v, path)?),
        "ulong" => Value::Ulong(int(v, path)?),
        "byte" => Value::Byte(int(v, path)?),
        "short" => Value::Short(int(v, path)?),
        "int" => Value::Int(int(v, path)?),
        "long" => Value::Long(int(v, path)?),
        "float" => Value::Float(f32::from_bits(bits(v, 8, path)? as u32)),
        "double" => Value::Double(f64::from_bits(bits(v, 16, path)?)),
        "decimal32" => Value::Decimal32(Decimal32(fixed_hex(v, path)?)),
        "decimal64" => Value::Decimal64(Decimal64(fixed_hex(v, path)?)),
        "decimal128" => Value::Decimal128(Decimal128(fixed_hex(v, path)?)),
        "char" => {
            let s = str_of(v, path)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Value::Char(c),
                _ => return Err(format!("{path}: char {s:?} is not one character")),
            }
        }
        "timestamp" => Value::Timestamp(Timestamp(int(v, path)?)),
        "uuid" => Value::Uuid(uuid(str_of(v, path)?, path)?),
        "binary" => Value::Binary(Bytes::from(hex_bytes(str_of(v, path)?, path)?)),
        "string" => Value::String(str_of(v, path)?.to_owned()),
        "symbol" => Value::Symbol(Symbol::from(str_of(v, path)?.to_owned())),
        "list" => Value::List(values(v, path)?),
        "map" => {
            let entries = array_of(v, path)?
                .iter()
                .enumerate()
                .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Ok((
                        to_value(k, &format!("{path}{{key {i}}}"))?,
                        to_value(v, &format!("{path}{{value {i}}}"))?,
                    )),
                    _ => Err(format!(
                        "{path}[{i}]: a map entry is not a [key, value] pair"
                    )),
                })
                .collect::<Res<_>>()?;
            Value::Map(Map::from_entries(entries))
        }
        other => return Err(format!("{path}: unknown type tag {other:?}")),
    })
}

/// `{"t": "array", "elem": TYPE, "descriptor": value|null, "v": [values]}`.
fn to_array(j: &Json, path: &str) -> Res<Array> {
    exact_keys(j, "t elem descriptor v", path)?;
    let elem = str_of(get(j, "elem", path)?, &format!("{path}.elem"))?;
    let element =
        type_of_tag(elem).ok_or_else(|| format!("{path}: unknown element type {elem:?}"))?;
    let items = values(get(j, "v", path)?, path)?;
    let d = get(j, "descriptor", path)?;
    let array = if d.is_null() {
        Array::new(element, items)
    } else {
        Array::described(
            descriptor(d, &format!("{path}.descriptor"))?,
            element,
            items,
        )
    };
    array.map_err(|e| format!("{path}: {e}"))
}

/// A descriptor: a typed ulong or symbol value.
fn descriptor(j: &Json, path: &str) -> Res<Descriptor> {
    match to_value(j, path)? {
        Value::Ulong(c) => Ok(Descriptor::Code(c)),
        Value::Symbol(s) => Ok(Descriptor::Symbol(s)),
        other => Err(format!(
            "{path}: a {} is not a descriptor",
            type_label(&other)
        )),
    }
}

fn type_of_tag(tag: &str) -> Option<Type> {
    Some(match tag {
        "null" => Type::Null,
        "bool" => Type::Boolean,
        "ubyte" => Type::Ubyte,
        "ushort" => Type::Ushort,
        "uint" => Type::Uint,
        "ulong" => Type::Ulong,
        "byte" => Type::Byte,
        "short" => Type::Short,
        "int" => Type::Int,
        "long" => Type::Long,
        "float" => Type::Float,
        "double" => Type::Double,
        "decimal32" => Type::Decimal32,
        "decimal64" => Type::Decimal64,
        "decimal128" => Type::Decimal128,
        "char" => Type::Char,
        "timestamp" => Type::Timestamp,
        "uuid" => Type::Uuid,
        "binary" => Type::Binary,
        "string" => Type::String,
        "symbol" => Type::Symbol,
        "list" => Type::List,
        "map" => Type::Map,
        "array" => Type::Array,
        _ => return None,
    })
}

// JSON accessors, each naming the path on failure.

fn get<'a>(j: &'a Json, key: &str, path: &str) -> Res<&'a Json> {
    j.get(key)
        .ok_or_else(|| format!("{path}: missing key {key:?} in {}", short_json(j)))
}

/// Fails unless `j` is an object with exactly the (space-separated) `keys`, so a change of format is noticed.
fn exact_keys(j: &Json, keys: &str, path: &str) -> Res<()> {
    let obj = j
        .as_object()
        .ok_or_else(|| format!("{path}: expected an object, got {}", short_json(j)))?;
    let have: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = keys.split_whitespace().collect();
    if have == want {
        Ok(())
    } else {
        Err(format!("{path}: expected keys {want:?}, got {have:?}"))
    }
}

/// Field `key` of an object, converted by `conv`, or `None` when it is null.
fn opt<T>(
    j: &Json,
    key: &str,
    section: &str,
    conv: impl Fn(&Json, &str) -> Res<T>,
) -> Res<Option<T>> {
    let path = format!("{section}.{key}");
    match get(j, key, section)? {
        Json::Null => Ok(None),
        v => conv(v, &path).map(Some),
    }
}

fn str_of<'a>(j: &'a Json, path: &str) -> Res<&'a str> {
    j.as_str()
        .ok_or_else(|| format!("{path}: expected a string, got {}", short_json(j)))
}

fn bool_of(j: &Json, path: &str) -> Res<bool> {
    j.as_bool()
        .ok_or_else(|| format!("{path}: expected true or false, got {}", short_json(j)))
}

fn array_of<'a>(j: &'a Json, path: &str) -> Res<&'a [Json]> {
    j.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{path}: expected a JSON array, got {}", short_json(j)))
}

/// A JSON array of typed values.
fn values(j: &Json, path: &str) -> Res<Vec<Value>> {
    array_of(j, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| to_value(v, &format!("{path}[{i}]")))
        .collect()
}

/// An integer given as a JSON number, or (beyond 2^53) as a decimal string, that must fit `T`.
fn int<T: TryFrom<i128>>(j: &Json, path: &str) -> Res<T> {
    let wide: i128 = match j {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| format!("{path}: {n} is not an integer"))?,
        Json::String(s) => s
            .parse()
            .map_err(|e| format!("{path}: {s:?} is not a decimal integer: {e}"))?,
        other => {
            return Err(format!(
                "{path}: expected an integer, got {}",
                short_json(other)
            ))
        }
    };
    T::try_from(wide).map_err(|_| {
        format!(
            "{path}: {wide} does not fit a {}",
            std::any::type_name::<T>()
        )
    })
}

/// IEEE-754 bits given as `"0x"` and `digits` hex digits.
fn bits(j: &Json, digits: usize, path: &str) -> Res<u64> {
    let s = str_of(j, path)?;
    match s.strip_prefix("0x") {
        Some(hex) if hex.len() == digits => {
            u64::from_str_radix(hex, 16).map_err(|e| format!("{path}: bad float bits {s:?}: {e}"))
        }
        _ => Err(format!(
            "{path}: float bits {s:?} are not 0x and {digits} hex digits"
        )),
    }
}

fn hex_bytes(s: &str, path: &str) -> Res<Vec<u8>> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) {
        return Err(format!(
            "{path}: {} is not an even number of hex digits",
            short(&s)
        ));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|e| format!("{path}: bad hex {:?} at {i}: {e}", &s[i..i + 2]))
        })
        .collect()
}

/// Exactly `N` bytes given as hex.
fn fixed_hex<const N: usize>(j: &Json, path: &str) -> Res<[u8; N]> {
    let bytes = hex_bytes(str_of(j, path)?, path)?;
    let n = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("{path}: expected {N} bytes, got {n}"))
}

/// A canonical lowercase `8-4-4-4-12` UUID.
fn uuid(s: &str, path: &str) -> Res<Uuid> {
    let canonical = s.len() == 36
        && s.char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    if !canonical {
        return Err(format!("{path}: {s:?} is not a canonical UUID"));
    }
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let bytes = hex_bytes(&hex, path)?;
    let n = bytes.len();
    bytes
        .try_into()
        .map(Uuid)
        .map_err(|_| format!("{path}: a UUID of {n} bytes"))
}

// ---------------------------------------------------------------------------------------------------------------
// Comparison with diffs that name the section and field
// ---------------------------------------------------------------------------------------------------------------

/// Records a difference for each named field of two structs, as `SECTION.FIELD`.
macro_rules! field_diffs {
    ($out:expr, $section:literal, $e:expr, $g:expr, $($f:ident),+ $(,)?) => {
        $(field_diff($out, concat!($section, ".", stringify!($f)), &$e.$f, &$g.$f);)+
    };
}

/// Every difference between two messages, section by section and field by field.
fn message_diffs(exp: &Message, got: &Message) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((e, g)) = both(&mut out, "header", exp.header(), got.header()) {
        field_diffs!(
            &mut out,
            "header",
            e,
            g,
            durable,
            priority,
            ttl,
            first_acquirer,
            delivery_count
        );
    }
    map_section(
        &mut out,
        "delivery_annotations",
        exp.delivery_annotations(),
        got.delivery_annotations(),
    );
    map_section(
        &mut out,
        "message_annotations",
        exp.message_annotations(),
        got.message_annotations(),
    );
    if let Some((e, g)) = both(&mut out, "properties", exp.properties(), got.properties()) {
        field_diffs!(
            &mut out,
            "properties",
            e,
            g,
            message_id,
            user_id,
            to,
            subject,
            reply_to,
            correlation_id,
            content_type,
            content_encoding,
            absolute_expiry_time,
            creation_time,
            group_id,
            group_sequence,
            reply_to_group_id,
        );
    }
    map_section(
        &mut out,
        "application_properties",
        exp.application_properties(),
        got.application_properties(),
    );
    body_diff(&mut out, exp.body(), got.body());
    map_section(&mut out, "footer", exp.footer(), got.footer());
    if out.is_empty() && exp != got {
        out.push(format!(
            "the messages differ but no section does: expected {} got {}",
            short(exp),
            short(got)
        ));
    }
    out
}

/// Both sections when both are present; records a difference when only one is.
fn both<'a, T: Debug>(
    out: &mut Vec<String>,
    section: &str,
    exp: Option<&'a T>,
    got: Option<&'a T>,
) -> Option<(&'a T, &'a T)> {
    let presence =
        |s: Option<&T>| s.map_or("absent".to_owned(), |s| format!("present {}", short(s)));
    match (exp, got) {
        (Some(e), Some(g)) => Some((e, g)),
        (None, None) => None,
        (e, g) => {
            out.push(format!(
                "{section}: expected the section {} got it {}",
                presence(e),
                presence(g)
            ));
            None
        }
    }
}

fn field_diff<T: PartialEq + Debug>(out: &mut Vec<String>, path: &str, exp: &T, got: &T) {
    if exp != got {
        out.push(format!(
            "{path}: expected {} got {}",
            short(exp),
            short(got)
        ));
    }
}

fn map_section(out: &mut Vec<String>, section: &str, exp: Option<&Map>, got: Option<&Map>) {
    if let Some((e, g)) = both(out, section, exp, got) {
        out.extend(map_diff(e, g, section));
    }
}

fn body_diff(out: &mut Vec<String>, exp: &Body, got: &Body) {
    match (exp, got) {
        (Body::Empty, Body::Empty) => {}
        (Body::Value(e), Body::Value(g)) => out.extend(value_diff(e, g, "body(amqp-value)")),
        (Body::Data(e), Body::Data(g)) if e.len() != g.len() => out.push(format!(
            "body: expected {} data sections got {}",
            e.len(),
            g.len()
        )),
        (Body::Data(e), Body::Data(g)) => {
            for (i, (e, g)) in e.iter().zip(g).enumerate() {
                field_diff(out, &format!("body(data #{i})"), e, g);
            }
        }
        (Body::Sequence(e), Body::Sequence(g)) if e.len() != g.len() => out.push(format!(
            "body: expected {} amqp-sequence sections got {}",
            e.len(),
            g.len()
        )),
        (Body::Sequence(e), Body::Sequence(g)) => {
            for (i, (e, g)) in e.iter().zip(g).enumerate() {
                out.extend(list_diff(e, g, &format!("body(amqp-sequence #{i})")));
            }
        }
        (e, g) => out.push(format!(
            "body: expected {} {} got {} {}",
            body_kind(e),
            short(e),
            body_kind(g),
            short(g)
        )),
    }
}

fn body_kind(b: &Body) -> &'static str {
    match b {
        Body::Empty => "no body",
        Body::Data(_) => "a data body",
        Body::Sequence(_) => "an amqp-sequence body",
        Body::Value(_) => "an amqp-value body",
    }
}

/// The first difference between two values, by type and exact value, recursively; `None` when equal.
fn value_diff(exp: &Value, got: &Value, path: &str) -> Option<String> {
    let (te, tg) = (type_label(exp), type_label(got));
    let fail = || {
        Some(format!(
            "{path}: expected {te} {} got {tg} {}",
            show(exp),
            show(got)
        ))
    };
    if te != tg {
        return fail();
    }
    match (exp, got) {
        (Value::List(e), Value::List(g)) => list_diff(e, g, path),
        (Value::Map(e), Value::Map(g)) => map_diff(e, g, path),
        (Value::Array(e), Value::Array(g)) => {
            if e.element_type() != g.element_type() {
                Some(format!(
                    "{path}: expected an array of {} got an array of {}",
                    e.element_type().name(),
                    g.element_type().name()
                ))
            } else if e.descriptor() != g.descriptor() {
                Some(format!(
                    "{path}: expected array descriptor {:?} got {:?}",
                    e.descriptor(),
                    g.descriptor()
                ))
            } else {
                list_diff(e.items(), g.items(), path)
            }
        }
        (Value::Described(e), Value::Described(g)) => {
            if e.descriptor != g.descriptor {
                Some(format!(
                    "{path}.descriptor: expected {:?} got {:?}",
                    e.descriptor, g.descriptor
                ))
            } else {
                value_diff(&e.value, &g.value, &format!("{path}.value"))
            }
        }
        _ if exp != got => fail(),
        _ => None,
    }
}

fn list_diff(exp: &[Value], got: &[Value], path: &str) -> Option<String> {
    if exp.len() != got.len() {
        return Some(format!(
            "{path}: expected {} items {} got {} items {}",
            exp.len(),
            short(&exp),
            got.len(),
            short(&got)
        ));
    }
    exp.iter()
        .zip(got)
        .enumerate()
        .find_map(|(i, (e, g))| value_diff(e, g, &format!("{path}[{i}]")))
}

fn map_diff(exp: &Map, got: &Map, path: &str) -> Option<String> {
    if exp.len() != got.len() {
        return Some(format!(
            "{path}: expected {} entries {} got {} entries {}",
            exp.len(),
            short(exp),
            got.len(),
            short(got)
        ));
    }
    exp.iter()
        .zip(got.iter())
        .enumerate()
        .find_map(|(i, ((ek, ev), (gk, gv)))| {
            value_diff(ek, gk, &format!("{path}{{key {i}}}"))
                .or_else(|| value_diff(ev, gv, &format!("{path}[{}]", short(ek))))
        })
}

fn type_label(v: &Value) -> &'static str {
    v.amqp_type().map_or("described", Type::name)
}

/// A value for a message, with the bits of floats (so NaNs and signed zeros can be told apart).
fn show(v: &Value) -> String {
    match v {
        Value::Float(f) => format!("{f:?} (bits {:#010x})", f.to_bits()),
        Value::Double(f) => format!("{f:?} (bits {:#018x})", f.to_bits()),
        other => short(other),
    }
}

/// `Debug` output cut to a readable length.
fn short<T: Debug + ?Sized>(v: &T) -> String {
    const LIMIT: usize = 160;
    let s = format!("{v:?}");
    let n = s.chars().count();
    if n <= LIMIT {
        s
    } else {
        format!(
            "{}...({n} chars)",
            s.chars().take(LIMIT).collect::<String>()
        )
    }
}

fn short_json(j: &Json) -> String {
    short(&format_args!("{j}"))
}

fn hex_preview(b: &[u8]) -> String {
    const LIMIT: usize = 64;
    let hex: String = b.iter().take(LIMIT).map(|x| format!("{x:02x}")).collect();
    if b.len() > LIMIT {
        format!("{hex}... ({} bytes)", b.len())
    } else {
        hex
    }
}
