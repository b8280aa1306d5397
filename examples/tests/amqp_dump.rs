//! Runs the real `amqp-dump` binary on the sample files in `examples/data/` and on temporary files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use nucleon_protocol::codec::{
    Array, Decoder, Descriptor, Encode, Map, Symbol, Timestamp, Type, Uuid, Value,
};
use nucleon_protocol::frame::{
    Accepted, Attach, Begin, Close, DeliveryState, Detach, Disposition, End, Error, ErrorCondition,
    Flow, Frame, FrameBody, Open, ProtocolHeader, Role, SaslCode, SaslInit, SaslMechanisms,
    SaslOutcome, Source, Target, Transfer,
};
use nucleon_protocol::Message;

const BIN: &str = env!("CARGO_BIN_EXE_amqp-dump");

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// A path for a temporary file, unique to the calling test by `name`.
fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("amqp-dump");
    fs::create_dir_all(&dir).expect("create the temporary directory");
    dir.join(name)
}

fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = tmp(name);
    fs::write(&path, bytes).expect("write a temporary file");
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run amqp-dump")
}

fn run_path(args: &[&str], path: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg(path)
        .output()
        .expect("run amqp-dump")
}

fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run amqp-dump");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for amqp-dump")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The message in `hello.msg`.
fn hello_message() -> Message {
    Message::builder()
        .durable(true)
        .message_id("hello-1")
        .to("examples")
        .subject("greeting")
        .content_type(Symbol::from_static("text/plain"))
        .creation_time(Timestamp(1_704_067_200_000))
        .property("lang", "en")
        .property("count", 1i32)
        .body("Hello, world!")
        .build()
}

/// The values in `values.bin`, one of most types.
fn sample_values() -> Vec<Value> {
    let mut map = Map::new();
    map.insert(Value::Symbol(Symbol::from_static("x-opt-key")), "value");
    map.insert(7i64, Value::List(vec![1u8.into(), 'λ'.into()]));
    let ints =
        Array::new(Type::Int, vec![1i32.into(), 2i32.into(), 3i32.into()]).expect("an int array");
    vec![
        Value::Null,
        true.into(),
        7u8.into(),
        70_000u32.into(),
        (-7i64).into(),
        1.5f64.into(),
        'λ'.into(),
        Timestamp(1_704_067_200_000).into(),
        Uuid([0x11; 16]).into(),
        Value::from(&b"\x00\x01bin"[..]),
        "text with \"quotes\"".into(),
        Symbol::from_static("amqp:not-found").into(),
        Value::List(vec![1i32.into(), "two".into(), Value::Null]),
        map.into(),
        ints.into(),
        Value::described(Descriptor::Code(0x0000_0137_0000_0001), "vendor-specific"),
        Value::Described(Box::new(nucleon_protocol::codec::Described {
            descriptor: Descriptor::Code(Error::CODE),
            value: Value::List(vec![
                Symbol::from_static("amqp:decode-error").into(),
                "bad bytes".into(),
            ]),
        })),
    ]
}

fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// A captured stream: bytes and the offset of each frame.
struct Stream {
    bytes: Vec<u8>,
    frame_offsets: Vec<usize>,
}

impl Stream {
    fn new(header: ProtocolHeader) -> Self {
        Stream {
            bytes: header.to_bytes().to_vec(),
            frame_offsets: Vec::new(),
        }
    }

    fn header(mut self, header: ProtocolHeader) -> Self {
        self.bytes.extend_from_slice(&header.to_bytes());
        self
    }

    fn frame(mut self, frame: Frame) -> Self {
        self.frame_offsets.push(self.bytes.len());
        frame.encode(&mut self.bytes);
        self
    }

    fn amqp(self, performative: impl Into<nucleon_protocol::frame::Performative>) -> Self {
        self.frame(Frame::amqp(0, performative))
    }

    fn sasl(self, body: impl Into<nucleon_protocol::frame::SaslFrame>) -> Self {
        self.frame(Frame {
            channel: 0,
            body: FrameBody::Sasl(body.into()),
        })
    }
}

/// The stream in `session.frames`: a client that sends one message and closes.
fn session_stream() -> Stream {
    let transfer = Transfer {
        handle: 0,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(b"\x00\x00\x00\x00")),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    };
    Stream::new(ProtocolHeader::AMQP)
        .amqp(Open {
            container_id: "nucleon-client".into(),
            hostname: Some("localhost".into()),
            max_frame_size: 65_536,
            channel_max: 255,
            idle_time_out: Some(30_000),
            ..Open::default()
        })
        .amqp(Begin {
            next_outgoing_id: 0,
            incoming_window: 2048,
            outgoing_window: 2048,
            ..Begin::default()
        })
        .amqp(Attach {
            name: "sender-1".into(),
            handle: 0,
            role: Role::Sender,
            source: Some(Source::with_address("client")),
            target: Some(Target::with_address("examples")),
            initial_delivery_count: Some(0),
            ..Attach::default()
        })
        .amqp(Flow {
            next_incoming_id: Some(0),
            incoming_window: 2048,
            next_outgoing_id: 0,
            outgoing_window: 2048,
            handle: Some(0),
            delivery_count: Some(0),
            link_credit: Some(0),
            available: Some(1),
            ..Flow::default()
        })
        .frame(Frame {
            channel: 0,
            body: FrameBody::Amqp {
                performative: transfer.into(),
                payload: hello_message().to_bytes(),
            },
        })
        .amqp(Disposition {
            role: Role::Sender,
            first: 0,
            last: None,
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        })
        .amqp(Detach {
            handle: 0,
            closed: true,
            error: None,
        })
        .amqp(End { error: None })
        .amqp(Close { error: None })
}

/// Splits a stream of protocol headers and frames into its parts, decoding the frames.
fn split_stream(bytes: &[u8]) -> (Vec<ProtocolHeader>, Vec<Frame>) {
    let bytes = Bytes::copy_from_slice(bytes);
    let (mut headers, mut frames) = (Vec::new(), Vec::new());
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos..].starts_with(b"AMQP") {
            let head: [u8; 8] = bytes[pos..pos + 8].try_into().expect("8 bytes");
            headers.push(ProtocolHeader::parse(head).expect("a protocol header"));
            pos += 8;
        } else {
            let size =
                u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            frames.push(Frame::decode(bytes.slice(pos..pos + size), pos).expect("a frame"));
            pos += size;
        }
    }
    (headers, frames)
}

fn decode_values(bytes: &[u8]) -> Vec<Value> {
    let mut dec = Decoder::new(Bytes::copy_from_slice(bytes));
    let mut values = Vec::new();
    while !dec.is_empty() {
        values.push(dec.decode_value().expect("a value"));
    }
    values
}

#[test]
fn sample_files_are_current() {
    let samples = [
        ("hello.msg", hello_message().to_bytes().to_vec()),
        ("values.bin", encode_values(&sample_values())),
        ("session.frames", session_stream().bytes),
    ];
    for (name, expected) in samples {
        let fresh = write_tmp(&format!("expected-{name}"), &expected);
        let committed = fs::read(data(name)).unwrap_or_default();
        assert!(
            committed == expected,
            "examples/data/{name} is not what the codec produces now; if the change is intended, run\n  \
             cp {} examples/data/{name}",
            fresh.display()
        );
    }
}

#[test]
fn value_mode_is_the_default_and_prints_each_value_with_its_offset() {
    let o = run_path(&[], &data("values.bin"));
    assert_exit(&o, 0);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "offset 0: null",
        "offset 1: true",
        "offset 2: 7u8",
        "offset 4: 70000u32",
        "offset 9: -7i64",
        "offset 11: 1.5",
        "offset 20: 'λ'",
        "offset 25: timestamp(2024-01-01T00:00:00.000Z)",
        "offset 34: uuid(11111111-1111-1111-1111-111111111111)",
        r#"offset 51: b"\x00\x01bin""#,
        r#"offset 58: "text with \"quotes\"""#,
        "offset 78: :amqp:not-found",
        r#"offset 94: [1, "two", null]"#,
        "offset 105: {",
        r#"  :x-opt-key: "value""#,
        "  7i64: [1u8, 'λ']",
        "offset 138: array<int>[1, 2, 3]",
        r#"offset 154: @0x00000137:0x00000001 "vendor-specific""#,
        "offset 181: @error(0x1d) [",
        "  condition=:amqp:decode-error",
        r#"  description="bad bytes""#,
    ] {
        assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
    }
    let explicit = run_path(&["--value"], &data("values.bin"));
    assert_exit(&explicit, 0);
    assert_eq!(stdout(&explicit), text);
}

#[test]
fn message_mode_prints_the_sections() {
    let o = run_path(&["--message"], &data("hello.msg"));
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        r#"@header(0x70) [
  durable=true
]
@properties(0x73) [
  message-id="hello-1"
  to="examples"
  subject="greeting"
  content-type=:text/plain
  creation-time=timestamp(2024-01-01T00:00:00.000Z)
]
@application-properties(0x74) {"lang": "en", "count": 1}
@amqp-value(0x77) "Hello, world!"
"#
    );
    assert!(stderr(&o).is_empty());
}

#[test]
fn frames_mode_prints_the_header_and_each_frame_with_its_offset() {
    let stream = session_stream();
    let o = run_path(&["--frames"], &data("session.frames"));
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with("offset 0: protocol header AMQP 1.0.0\n"),
        "{text}"
    );
    let offsets = &stream.frame_offsets;
    let size = |i: usize| offsets.get(i + 1).copied().unwrap_or(stream.bytes.len()) - offsets[i];
    let names = [
        "open",
        "begin",
        "attach",
        "flow",
        "transfer",
        "disposition",
        "detach",
        "end",
        "close",
    ];
    let codes = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18];
    for (i, (name, code)) in names.iter().zip(codes).enumerate() {
        let opener = if matches!(*name, "end" | "close") {
            "[]"
        } else {
            "["
        };
        let line = format!(
            "offset {} ({} bytes): [0] @{name}({code:#04x}) {opener}",
            offsets[i],
            size(i)
        );
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in\n{text}"
        );
    }
    for line in [
        r#"  container-id="nucleon-client""#,
        "  max-frame-size=65536",
        "  idle-time-out=30000",
        "  source=@source(0x28) [",
        r#"    address="examples""#,
        r#"  delivery-tag=b"\x00\x00\x00\x00""#,
        "] (payload 111 bytes)",
        "  @header(0x70) [",
        "    durable=true",
        r#"  @amqp-value(0x77) "Hello, world!""#,
        "  state=@accepted(0x24) []",
        "  closed=true",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in\n{text}"
        );
    }
}

#[test]
fn frames_mode_follows_a_sasl_exchange_to_the_amqp_header() {
    let open = Open {
        container_id: "c".into(),
        ..Open::default()
    };
    // A server's stream: mechanisms, outcome, then the AMQP header; and a heartbeat.
    let server = Stream::new(ProtocolHeader::SASL)
        .sasl(SaslMechanisms {
            sasl_server_mechanisms: vec![
                Symbol::from_static("PLAIN"),
                Symbol::from_static("ANONYMOUS"),
            ],
        })
        .sasl(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
        .header(ProtocolHeader::AMQP)
        .amqp(open.clone())
        .frame(Frame {
            channel: 0,
            body: FrameBody::Empty,
        });
    let path = write_tmp("sasl-server.frames", &server.bytes);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 0);
    let f = &server.frame_offsets;
    assert_eq!(
        stdout(&o),
        format!(
            "offset 0: protocol header SASL 1.0.0
offset {} ({} bytes): [0] @sasl-mechanisms(0x40) [
  sasl-server-mechanisms=array<symbol>[:PLAIN, :ANONYMOUS]
]
offset {} ({} bytes): [0] @sasl-outcome(0x44) [
  code=0
]
offset {}: protocol header AMQP 1.0.0
offset {} ({} bytes): [0] @open(0x10) [
  container-id=\"c\"
]
offset {} (8 bytes): [0] (empty frame)
",
            f[0],
            f[1] - f[0],
            f[1],
            f[2] - f[1] - 8,
            f[2] - 8,
            f[2],
            f[3] - f[2],
            f[3],
        )
    );
    // A client's stream has no sasl-outcome: the AMQP header follows its own SASL frames.
    let client = Stream::new(ProtocolHeader::SASL)
        .sasl(SaslInit {
            mechanism: Symbol::from_static("ANONYMOUS"),
            initial_response: None,
            hostname: Some("localhost".into()),
        })
        .header(ProtocolHeader::AMQP)
        .amqp(open);
    let path = write_tmp("sasl-client.frames", &client.bytes);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text
        .contains("[0] @sasl-init(0x41) [\n  mechanism=:ANONYMOUS\n  hostname=\"localhost\"\n]"));
    assert!(text.contains(&format!(
        "offset {}: protocol header AMQP 1.0.0\n",
        client.frame_offsets[1] - 8
    )));
}

#[test]
fn frames_mode_reassembles_a_message_split_over_transfers() {
    let payload = hello_message().to_bytes();
    let (first, second) = payload.split_at(40);
    let transfer = |more, part: &[u8]| Frame {
        channel: 0,
        body: FrameBody::Amqp {
            performative: Transfer {
                handle: 0,
                delivery_id: Some(0),
                delivery_tag: Some(Bytes::from_static(b"t")),
                more,
                ..Transfer::default()
            }
            .into(),
            payload: Bytes::copy_from_slice(part),
        },
    };
    let stream = Stream::new(ProtocolHeader::AMQP)
        .frame(transfer(true, first))
        .frame(transfer(false, second));
    let path = write_tmp("split.frames", &stream.bytes);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("] (payload 40 bytes)\n  (the message continues in the next transfer)\n"),
        "{text}"
    );
    assert!(
        text.contains("  @amqp-value(0x77) \"Hello, world!\"\n"),
        "{text}"
    );
}

#[test]
fn malformed_input_exits_1_naming_the_file_and_the_offset() {
    // A value, then a byte that is no format code.
    let path = write_tmp("bad.bin", b"\xa1\x01a\xff");
    let o = run_path(&[], &path);
    assert_exit(&o, 1);
    assert_eq!(
        stdout(&o),
        "offset 0: \"a\"\n",
        "the values before the error are printed"
    );
    assert_eq!(
        stderr(&o),
        format!(
            "amqp-dump: {}: at byte 3: invalid format code 0xff\n",
            path.display()
        )
    );

    // An empty file holds no value.
    let path = write_tmp("empty.bin", b"");
    let o = run_path(&[], &path);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("at byte 0: input ended"),
        "{}",
        stderr(&o)
    );

    // A message with a header section after its body.
    let hello = hello_message().to_bytes();
    let mut bytes = hello.to_vec();
    bytes.extend_from_slice(&Message::builder().durable(true).build().to_bytes());
    let path = write_tmp("bad.msg", &bytes);
    let o = run_path(&["--message"], &path);
    assert_exit(&o, 1);
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "amqp-dump: {}: at byte {}: invalid field message section",
            path.display(),
            hello.len()
        )),
        "{err}"
    );

    // A stream cut off inside its last frame: the frames before it are printed.
    let stream = session_stream();
    let close_at = *stream.frame_offsets.last().expect("frames");
    let path = write_tmp("cut.frames", &stream.bytes[..stream.bytes.len() - 1]);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("@end(0x17) []"));
    assert_eq!(
        stderr(&o),
        format!(
            "amqp-dump: {}: at byte {close_at}: input ended: needed {} more bytes, {} available\n",
            path.display(),
            stream.bytes.len() - close_at,
            stream.bytes.len() - close_at - 1
        )
    );

    // Not AMQP at all, and a bad frame header.
    let path = write_tmp("http.frames", b"GET / HTTP/1.1\r\n");
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 1);
    assert!(stderr(&o).ends_with(": at byte 0: framing error: not an AMQP protocol header\n"));
    let mut bytes = ProtocolHeader::AMQP.to_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 8, 1, 0, 0, 0]);
    let path = write_tmp("doff.frames", &bytes);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 1);
    assert!(stderr(&o).ends_with(": at byte 8: framing error: data offset is smaller than 2\n"));

    // A SASL frame after the AMQP header.
    let stream = Stream::new(ProtocolHeader::AMQP).sasl(SaslOutcome {
        code: SaslCode::Ok,
        additional_data: None,
    });
    let path = write_tmp("late-sasl.frames", &stream.bytes);
    let o = run_path(&["--frames"], &path);
    assert_exit(&o, 1);
    assert!(stderr(&o)
        .ends_with(": at byte 8: framing error: a SASL frame after the AMQP protocol header\n"));
}

#[test]
fn an_unreadable_file_exits_1_and_the_other_files_are_still_dumped() {
    let missing = tmp("does-not-exist.bin");
    let values = write_tmp("one-value.bin", b"\x41");
    let o = Command::new(BIN)
        .arg(&missing)
        .arg(&values)
        .output()
        .expect("run amqp-dump");
    assert_exit(&o, 1);
    assert!(stderr(&o).starts_with(&format!(
        "amqp-dump: {}: cannot read the file: ",
        missing.display()
    )));
    assert_eq!(
        stdout(&o),
        format!(
            "==> {} <==\n\n==> {} <==\noffset 0: true\n",
            missing.display(),
            values.display()
        )
    );
}

#[test]
fn bad_usage_exits_2() {
    let values = data("values.bin");
    let values = values.to_str().expect("a UTF-8 path");
    for args in [
        &[][..],
        &["--value", "--frames", values],
        &["--message", "--frames", values],
        &["--no-such-option", values],
        &["--roundtrip"],
        &["--roundtrip", "out.bin", values, values],
    ] {
        let o = run(args);
        assert_exit(&o, 2);
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = run(&["--roundtrip", "out.bin", values, values]);
    assert!(stderr(&o).contains("--roundtrip needs exactly one input FILE"));
}

#[test]
fn help_documents_the_modes_and_the_default() {
    let o = run(&["--help"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("Usage: amqp-dump [OPTIONS] <FILE>..."),
        "{text}"
    );
    assert!(
        text.contains("--value") && text.contains("[default]"),
        "{text}"
    );
    assert!(
        text.contains("--message")
            && text.contains("--frames")
            && text.contains("--roundtrip <OUT>")
    );
    assert!(text.contains("`-` reads standard input"));
}

#[test]
fn dash_reads_standard_input() {
    let from_file = run_path(&["--message"], &data("hello.msg"));
    let from_stdin = run_stdin(
        &["--message", "-"],
        &fs::read(data("hello.msg")).expect("sample"),
    );
    assert_exit(&from_stdin, 0);
    assert_eq!(stdout(&from_stdin), stdout(&from_file));
    let bad = run_stdin(&["-"], b"\x70\x00");
    assert_exit(&bad, 1);
    assert_eq!(
        stderr(&bad),
        "amqp-dump: <stdin>: at byte 1: input ended: needed 4 more bytes, 1 available\n"
    );
}

#[test]
fn roundtrip_writes_a_reencoding_that_decodes_to_the_same_values() {
    // A uint and a list in wider forms than needed: the re-encoding uses the smallest forms.
    let input = b"\x70\x00\x00\x00\x05\xd0\x00\x00\x00\x05\x00\x00\x00\x01\x41";
    let path = write_tmp("wide.bin", input);
    let out = tmp("wide.out");
    let o = run_path(&["--roundtrip", out.to_str().expect("UTF-8")], &path);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "offset 0: 5u32\noffset 5: [true]\n");
    let written = fs::read(&out).expect("the round-trip file");
    assert_eq!(written, b"\x52\x05\xc0\x02\x01\x41");
    assert_eq!(decode_values(&written), decode_values(input));

    let out = tmp("values.out");
    let o = run_path(
        &["--value", "--roundtrip", out.to_str().expect("UTF-8")],
        &data("values.bin"),
    );
    assert_exit(&o, 0);
    assert_eq!(
        decode_values(&fs::read(&out).expect("written")),
        sample_values()
    );
}

#[test]
fn roundtrip_of_a_message_reencodes_its_sections() {
    let out = tmp("hello.out");
    let o = run_path(
        &["--message", "--roundtrip", out.to_str().expect("UTF-8")],
        &data("hello.msg"),
    );
    assert_exit(&o, 0);
    let written = Bytes::from(fs::read(&out).expect("written"));
    assert_eq!(
        Message::decode(written).expect("a message"),
        hello_message()
    );
}

#[test]
fn roundtrip_of_frames_reencodes_the_stream() {
    let out = tmp("session.out");
    let o = run_path(
        &["--frames", "--roundtrip", out.to_str().expect("UTF-8")],
        &data("session.frames"),
    );
    assert_exit(&o, 0);
    let written = fs::read(&out).expect("written");
    assert_eq!(
        split_stream(&written),
        split_stream(&session_stream().bytes)
    );

    // A frame with an extended header (doff 3) is re-encoded without it.
    let mut bytes = ProtocolHeader::AMQP.to_bytes().to_vec();
    let close = Close {
        error: Some(Error::new(ErrorCondition::ConnectionForced, "bye")),
    }
    .to_bytes();
    bytes.extend_from_slice(&(12 + close.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[3, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    bytes.extend_from_slice(&close);
    let path = write_tmp("doff3.frames", &bytes);
    let out = tmp("doff3.out");
    let o = run_path(
        &["--frames", "--roundtrip", out.to_str().expect("UTF-8")],
        &path,
    );
    assert_exit(&o, 0);
    let written = fs::read(&out).expect("written");
    assert_eq!(written.len(), bytes.len() - 4);
    assert_eq!(split_stream(&written), split_stream(&bytes));
}

#[test]
fn truncated_and_corrupted_samples_never_crash() {
    for (mode, name) in [
        ("--value", "values.bin"),
        ("--message", "hello.msg"),
        ("--frames", "session.frames"),
    ] {
        let sample = fs::read(data(name)).expect("sample");
        let mut inputs: Vec<Vec<u8>> = (0..sample.len())
            .step_by(7)
            .map(|n| sample[..n].to_vec())
            .collect();
        inputs.extend((0..sample.len()).step_by(11).map(|i| {
            let mut bad = sample.clone();
            bad[i] ^= 0xff;
            bad
        }));
        for input in inputs {
            let o = run_stdin(&[mode, "-"], &input);
            let code = o.status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "{mode} {input:02x?}: {code:?}\n{}",
                stderr(&o)
            );
            if code == Some(1) {
                assert!(
                    stderr(&o).starts_with("amqp-dump: <stdin>: at byte "),
                    "{}",
                    stderr(&o)
                );
            }
        }
    }
}
