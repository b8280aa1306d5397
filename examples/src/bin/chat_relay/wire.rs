//! What travels: the JSON carried in AMQP message bodies between relays, the JSON frames between a relay and
//! its browsers, and the checks every user-supplied string passes before it goes anywhere.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The longest name, in characters.
pub const MAX_NAME: usize = 32;
/// The longest room name, in characters.
pub const MAX_ROOM: usize = 32;
/// The longest message text, in characters.
pub const MAX_TEXT: usize = 2000;

/// One event on `chat/<room>`, the whole body of an AMQP message as an `amqp-value` string of JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Wire {
    /// A chat message.
    Message {
        /// The relay it was sent through.
        relay: String,
        /// A unique id (UUID).
        id: String,
        /// Who wrote it.
        name: String,
        /// What they wrote.
        text: String,
        /// When the relay sent it, in milliseconds since the Unix epoch.
        ts: u64,
    },
    /// `name` joined the room on `relay`, whose members are now `members`. Every other relay answers with
    /// a `presence`.
    Join {
        /// The relay.
        relay: String,
        /// Who joined.
        name: String,
        /// The relay's members in the room, `name` included.
        members: Vec<String>,
    },
    /// `name` left the room on `relay`, whose members are now `members`.
    Leave {
        /// The relay.
        relay: String,
        /// Who left.
        name: String,
        /// The relay's members in the room that remain.
        members: Vec<String>,
    },
    /// The members of the room on `relay`: an answer, a heartbeat, or (with `ask`) a request that every
    /// other relay answers with its own.
    Presence {
        /// The relay.
        relay: String,
        /// Its members in the room.
        members: Vec<String>,
        /// Every other relay answers with its presence.
        ask: bool,
    },
}

impl Wire {
    /// The relay the event came from.
    pub fn relay(&self) -> &str {
        match self {
            Wire::Message { relay, .. }
            | Wire::Join { relay, .. }
            | Wire::Leave { relay, .. }
            | Wire::Presence { relay, .. } => relay,
        }
    }

    /// Checks every user-supplied string in an event from the broker (other relays are not trusted).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Wire::Message { name, text, .. } => check_name(name).and(check_text(text)).map(|_| ()),
            Wire::Join { name, members, .. } | Wire::Leave { name, members, .. } => {
                check_name(name)?;
                members.iter().try_for_each(|m| check_name(m).map(|_| ()))
            }
            Wire::Presence { members, .. } => {
                members.iter().try_for_each(|m| check_name(m).map(|_| ()))
            }
        }
    }
}

/// The connection to the broker, as the browser shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not open yet.
    Connecting,
    /// Open.
    Connected,
    /// Lost; reconnecting.
    Reconnecting,
}

/// A frame from a relay to a browser.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToBrowser<'a> {
    /// The state of the relay's AMQP connection.
    Status {
        /// The state.
        state: LinkState,
    },
    /// The browser joined `room` as `name`.
    Joined {
        /// The room.
        room: &'a str,
        /// The name.
        name: &'a str,
    },
    /// Everybody in the room, sorted.
    Members {
        /// The names.
        members: &'a [String],
    },
    /// A chat message.
    Message {
        /// Its id.
        id: &'a str,
        /// Who wrote it.
        name: &'a str,
        /// What they wrote.
        text: &'a str,
        /// When, in milliseconds since the Unix epoch.
        ts: u64,
    },
    /// Somebody joined or left.
    System {
        /// What happened.
        text: &'a str,
    },
    /// The browser's last frame was refused.
    Error {
        /// Why.
        error: &'a str,
    },
}

impl ToBrowser<'_> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!(r#"{{"type":"error","error":"{e}"}}"#))
    }
}

/// A frame from a browser to its relay.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum FromBrowser {
    /// Join a room under a name (once per WebSocket).
    Join {
        /// The name.
        name: String,
        /// The room.
        room: String,
    },
    /// Send a message to the room joined.
    Send {
        /// The text.
        text: String,
    },
}

/// A name as the relay keeps it: NFKC-normalized (so that fullwidth letters, ligatures and other
/// compatibility spellings become the plain ones), trimmed, runs of spaces made one, 1 to 32 characters, and
/// nothing invisible or misleading in it: no control (Cc), format (Cf: bidi overrides and isolates, zero-width
/// spaces and joiners, the BOM), private-use (Co), unassigned (Cn), line or paragraph separator, no space but
/// U+0020, and none of the letters and marks that render as nothing (see [`is_invisible`]).
pub fn normalize_name(name: &str) -> Result<String, String> {
    let normalized: String = name.nfkc().collect();
    let mut out = String::with_capacity(normalized.len());
    for word in normalized.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if out.chars().count() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} characters"));
    }
    if let Some(c) = out.chars().find(|&c| is_invisible(c)) {
        return Err(format!(
            "the name contains an invisible or control character (U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(out)
}

/// True for a character a name may not hold: one that is invisible, moves or reorders the text around it,
/// or could render differently on every screen.
pub fn is_invisible(c: char) -> bool {
    match c {
        ' ' => false,
        // Letters and marks that render as nothing: the Hangul fillers, the combining grapheme joiner, the
        // Mongolian free variation selectors and vowel separator, and the Braille blank.
        '\u{115F}'
        | '\u{1160}'
        | '\u{3164}'
        | '\u{FFA0}'
        | '\u{034F}'
        | '\u{180B}'..='\u{180F}'
        | '\u{2800}' => true,
        _ => matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::PrivateUse
                | GeneralCategory::Unassigned
                | GeneralCategory::Surrogate
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::SpaceSeparator
        ),
    }
}

/// The form two names are compared in: equal keys are the same name (case ignored, after NFKC).
pub fn name_key(name: &str) -> String {
    name.to_lowercase().nfkc().collect()
}

/// A name received from the broker: it must be one [`normalize_name`] would keep as it is (relays send
/// only normalized names), so that what another relay sends is held to the rules this one applies.
pub fn check_name(name: &str) -> Result<&str, String> {
    match normalize_name(name) {
        Ok(n) if n == name => Ok(name),
        Ok(_) => Err(format!("the name {name:?} is not normalized")),
        Err(e) => Err(e),
    }
}

/// A room: 1 to 32 of `A-Z a-z 0-9 _ -`.
pub fn check_room(room: &str) -> Result<&str, String> {
    let valid = (1..=MAX_ROOM).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(room)
    } else {
        Err(format!(
            "a room is 1 to {MAX_ROOM} letters, digits, '_' or '-'"
        ))
    }
}

/// A message: 1 to 2000 characters, not only spaces, no control characters.
pub fn check_text(text: &str) -> Result<&str, String> {
    if text.trim().is_empty() {
        return Err("the message is empty".to_owned());
    }
    if text.chars().count() > MAX_TEXT {
        return Err(format!("the message is longer than {MAX_TEXT} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("the message contains control characters".to_owned());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rooms_and_texts_are_checked() {
        assert_eq!(normalize_name("  ann "), Ok("ann".to_owned()));
        assert_eq!(
            normalize_name("ann   van\u{3000}dam"),
            Ok("ann van dam".to_owned())
        );
        assert!(normalize_name(" ").is_err());
        assert!(normalize_name(&"x".repeat(33)).is_err());
        assert!(normalize_name(&"é".repeat(32)).is_ok());
        assert!(normalize_name("a\u{7}b").is_err());
        assert!(check_name("ann").is_ok());
        assert!(check_name(" ann").is_err(), "not normalized");
        assert!(check_name("\u{FF41}nn").is_err(), "not normalized");
        assert!(check_room("r-1_A").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room("chat/x").is_err());
        assert!(check_room(&"r".repeat(33)).is_err());
        assert!(check_text("<script>alert(1)</script>").is_ok());
        assert!(check_text(&"m".repeat(2001)).is_err());
        assert!(check_text("line\nbreak").is_err());
    }

    #[test]
    fn names_are_nfkc_and_hold_nothing_invisible() {
        // Fullwidth letters, a ligature, a decomposed accent: each becomes its plain form.
        assert_eq!(
            normalize_name("\u{FF21}\u{FF4E}\u{FF4E}"),
            Ok("Ann".to_owned())
        );
        assert_eq!(normalize_name("\u{FB01}n"), Ok("fin".to_owned()));
        assert_eq!(normalize_name("Zoe\u{301}"), Ok("Zo\u{E9}".to_owned()));
        assert_eq!(name_key("\u{FF21}NN"), name_key("ann"));
        for bad in [
            "ann\u{202E}nimda",     // right-to-left override
            "ann\u{2066}x\u{2069}", // left-to-right isolate
            "a\u{200B}nn",          // zero-width space
            "a\u{200D}nn",          // zero-width joiner
            "a\u{200E}nn",          // left-to-right mark
            "\u{FEFF}ann",          // byte order mark
            "a\u{2028}b",           // line separator
            "\u{3164}",             // Hangul filler
            "a\u{E000}",            // private use
            "a\u{1680}b",           // ogham space mark: a space that is not U+0020
        ] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_name("Zoë 🙂").is_ok());
        assert!(normalize_name("名前").is_ok());
    }

    #[test]
    fn events_round_trip_as_json() {
        let w = Wire::Presence {
            relay: "r".into(),
            members: vec!["ann".into()],
            ask: true,
        };
        let json = serde_json::to_string(&w).expect("encodes");
        assert_eq!(
            json,
            r#"{"kind":"presence","relay":"r","members":["ann"],"ask":true}"#
        );
        assert_eq!(serde_json::from_str::<Wire>(&json).expect("decodes"), w);
        let bad = Wire::Join {
            relay: "r".into(),
            name: "a\u{0}".into(),
            members: vec![],
        };
        assert!(bad.check().is_err());
    }
}
