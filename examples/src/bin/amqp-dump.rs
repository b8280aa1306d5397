//! `amqp-dump`: prints AMQP 1.0 encoded values, messages and captured frame streams as indented text.
//!
//! The text notation is the one of [`nucleon_protocol::fmt`]. Run `amqp-dump --help` for the options.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory, Parser};
use nucleon_protocol::codec::{DecodeError, DecodeErrorKind, Decoder, Encode};
use nucleon_protocol::frame::{
    Frame, FrameBody, FrameHeader, FrameType, Performative, ProtocolHeader, ProtocolId,
};
use nucleon_protocol::Message;

const AFTER_HELP: &str = "\
Output uses the notation of nucleon_protocol::fmt: 7u32, -7i64, \"text\", :symbol, b\"\\x00bin\",
[list], {key: value}, array<int>[1, 2], @open(0x10) [container-id=\"c\", ...].

Exit status: 0 on success, 1 when an input cannot be read or is malformed (the error names the file
and the byte offset), 2 on bad usage.";

/// Decodes AMQP 1.0 data and prints it as indented text.
#[derive(Parser, Debug)]
#[command(name = "amqp-dump", version, after_help = AFTER_HELP)]
#[command(group(ArgGroup::new("mode").multiple(false)))]
// The field docs are clap's help text, where `[default]` is meant literally, not as a link.
#[allow(rustdoc::broken_intra_doc_links)]
struct Cli {
    /// Each FILE holds one or more concatenated encoded values; print each with its offset [default]
    #[arg(long, group = "mode")]
    value: bool,

    /// Each FILE holds one encoded message (the sections of a transfer payload); print it section by section
    #[arg(long, group = "mode")]
    message: bool,

    /// Each FILE holds a captured byte stream: a protocol header, then frames (a SASL exchange is followed
    /// by a second, AMQP, protocol header); print each header and frame with its offset, and each
    /// transfer's message
    #[arg(long, group = "mode")]
    frames: bool,

    /// Also write the decoded input, re-encoded, to OUT (needs exactly one FILE)
    #[arg(long, value_name = "OUT")]
    roundtrip: Option<PathBuf>,

    /// Input files; `-` reads standard input
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// What the input files hold.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Value,
    Message,
    Frames,
}

/// Why one input could not be dumped.
enum Failure {
    /// The input could not be read or was malformed; reported against the file.
    Input(String),
    /// Writing the dump or the round-trip file failed.
    Output(io::Error),
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::Input(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.roundtrip.is_some() && cli.files.len() != 1 {
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                "--roundtrip needs exactly one input FILE",
            )
            .exit();
    }
    let mode = if cli.message {
        Mode::Message
    } else if cli.frames {
        Mode::Frames
    } else {
        Mode::Value
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut status = ExitCode::SUCCESS;
    for (i, file) in cli.files.iter().enumerate() {
        let name = display_name(file);
        let result = (|| {
            if cli.files.len() > 1 {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "==> {name} <==")?;
            }
            let input = read_input(file)
                .map_err(|e| Failure::Input(format!("cannot read the file: {e}")))?;
            let reencoded = match mode {
                Mode::Value => dump_values(&mut out, input)?,
                Mode::Message => dump_message(&mut out, input)?,
                Mode::Frames => dump_frames(&mut out, input)?,
            };
            if let Some(path) = &cli.roundtrip {
                fs::write(path, reencoded)
                    .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {}
            Err(Failure::Input(why)) => {
                // Flush first so the error follows the output it interrupts.
                if let Err(e) = out.flush() {
                    return output_failed(&e);
                }
                report(&format!("{name}: {why}"));
                status = ExitCode::FAILURE;
            }
            Err(Failure::Output(e)) => return output_failed(&e),
        }
    }
    match out.flush() {
        Ok(()) => status,
        Err(e) => output_failed(&e),
    }
}

/// Standard output could not be written: a closed pipe (`amqp-dump ... | head`) ends quietly, anything else
/// is reported.
fn output_failed(e: &io::Error) -> ExitCode {
    if e.kind() == io::ErrorKind::BrokenPipe {
        ExitCode::SUCCESS
    } else {
        report(&format!("cannot write the output: {e}"));
        ExitCode::FAILURE
    }
}

/// Writes an error line to standard error, ignoring failure (there is nowhere left to report it).
fn report(message: &str) {
    let _ = writeln!(io::stderr(), "amqp-dump: {message}");
}

fn display_name(file: &Path) -> String {
    if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    }
}

fn read_input(file: &Path) -> io::Result<Bytes> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin().lock().read_to_end(&mut buf)?;
        Ok(buf.into())
    } else {
        fs::read(file).map(Bytes::from)
    }
}

/// Prints each of the concatenated values in `input` with its offset; returns them re-encoded.
fn dump_values(out: &mut impl Write, input: Bytes) -> Result<Vec<u8>, Failure> {
    let mut dec = Decoder::new(input);
    let mut reencoded = Vec::new();
    loop {
        let at = dec.offset();
        let value = dec.decode_value()?;
        writeln!(out, "offset {at}: {value:#}")?;
        value.encode(&mut reencoded);
        if dec.is_empty() {
            return Ok(reencoded);
        }
    }
}

/// Prints the message in `input` section by section; returns it re-encoded from its sections.
fn dump_message(out: &mut impl Write, input: Bytes) -> Result<Vec<u8>, Failure> {
    let mut message = Message::decode(input)?;
    writeln!(out, "{message:#}")?;
    message.forget_encoded();
    Ok(message.to_bytes().to_vec())
}

/// Where a frame stream is: which frames it expects next [AMQP 1.0 §2.2, §5.3.1].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// After a SASL protocol header: SASL frames, until the AMQP protocol header.
    Sasl,
    /// After an AMQP protocol header: AMQP frames.
    Amqp,
}

fn framing(offset: usize, why: &'static str) -> DecodeError {
    DecodeError::new(offset, DecodeErrorKind::Framing(why))
}

fn eof(offset: usize, needed: usize, available: usize) -> DecodeError {
    DecodeError::new(offset, DecodeErrorKind::UnexpectedEof { needed, available })
}

/// Reads the protocol header at `pos` [AMQP 1.0 §2.2].
fn protocol_header(input: &[u8], pos: usize) -> Result<ProtocolHeader, DecodeError> {
    let rest = &input[pos..];
    let bytes: [u8; 8] = rest
        .get(..ProtocolHeader::SIZE)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| eof(pos, ProtocolHeader::SIZE, rest.len()))?;
    let header =
        ProtocolHeader::parse(bytes).ok_or_else(|| framing(pos, "not an AMQP protocol header"))?;
    match header.id {
        ProtocolId::Tls => Err(framing(
            pos,
            "TLS protocol header: the encrypted stream that follows cannot be decoded",
        )),
        _ if !header.is_supported() => Err(framing(pos, "unsupported protocol version")),
        _ => Ok(header),
    }
}

/// Prints the protocol headers and frames of a captured stream with their offsets, and the message of each
/// complete delivery; returns the stream re-encoded.
fn dump_frames(out: &mut impl Write, input: Bytes) -> Result<Vec<u8>, Failure> {
    let mut reencoded = Vec::with_capacity(input.len());
    // Payloads of deliveries split over several transfers (`more`), by link handle.
    let mut partial: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut pos = 0;
    let mut phase = None;
    while pos < input.len() || phase.is_none() {
        // A protocol header starts the stream, and follows the SASL frames: after the sasl-outcome from a
        // server, or right after the client's own SASL frames in a client capture [AMQP 1.0 §5.3.2].
        let header_expected = match phase {
            None => true,
            Some(Phase::Sasl) => input[pos..].starts_with(b"AMQP"),
            Some(Phase::Amqp) => false,
        };
        if header_expected {
            let header = protocol_header(&input, pos)?;
            phase = Some(match (phase, header.id) {
                (None, ProtocolId::Sasl) => Phase::Sasl,
                (_, ProtocolId::Amqp) => Phase::Amqp,
                _ => return Err(framing(pos, "a second SASL protocol header").into()),
            });
            writeln!(out, "offset {pos}: protocol header {header}")?;
            reencoded.extend_from_slice(&header.to_bytes());
            pos += ProtocolHeader::SIZE;
            continue;
        }
        if input[pos..].starts_with(b"AMQP") {
            return Err(framing(pos, "a protocol header among the AMQP frames").into());
        }
        let rest = &input[pos..];
        let head: [u8; 8] = rest
            .get(..FrameHeader::SIZE)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| eof(pos, FrameHeader::SIZE, rest.len()))?;
        let header = FrameHeader::parse(head, pos)?;
        let size = header.size as usize;
        if size > rest.len() {
            return Err(eof(pos, size, rest.len()).into());
        }
        match (phase, header.frame_type) {
            (Some(Phase::Sasl), FrameType::Amqp) => {
                return Err(framing(pos, "an AMQP frame before the AMQP protocol header").into())
            }
            (Some(Phase::Amqp), FrameType::Sasl) => {
                return Err(framing(pos, "a SASL frame after the AMQP protocol header").into())
            }
            _ => {}
        }
        let frame = Frame::decode(input.slice(pos..pos + size), pos)?;
        writeln!(out, "offset {pos} ({size} bytes): {frame:#}")?;
        dump_transfer_message(out, &frame, &mut partial)?;
        frame.encode(&mut reencoded);
        pos += size;
    }
    Ok(reencoded)
}

/// After a transfer that completes a delivery, prints the delivery's message, indented.
fn dump_transfer_message(
    out: &mut impl Write,
    frame: &Frame,
    partial: &mut BTreeMap<u32, Vec<u8>>,
) -> io::Result<()> {
    let FrameBody::Amqp {
        performative: Performative::Transfer(transfer),
        payload,
    } = &frame.body
    else {
        return Ok(());
    };
    if transfer.aborted {
        partial.remove(&transfer.handle);
        return writeln!(out, "  (delivery aborted)");
    }
    if transfer.more {
        partial
            .entry(transfer.handle)
            .or_default()
            .extend_from_slice(payload);
        return writeln!(out, "  (the message continues in the next transfer)");
    }
    let message = match partial.remove(&transfer.handle) {
        Some(mut earlier) => {
            earlier.extend_from_slice(payload);
            Bytes::from(earlier)
        }
        None => payload.clone(),
    };
    if message.is_empty() {
        return Ok(());
    }
    // A message that does not decode is reported but is no framing error: the message format may not be 0.
    let text = match Message::decode(message) {
        Ok(m) => format!("{m:#}"),
        Err(e) => format!("(the message does not decode, {e} of the message)"),
    };
    for line in text.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}
