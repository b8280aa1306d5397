//! SASL negotiation, client and server, for ANONYMOUS, PLAIN and EXTERNAL [AMQP 1.0 §5.3].
//!
//! ```text
//! client                         server
//!   SASL header  ──────────────▶
//!                ◀──────────────  SASL header, sasl-mechanisms
//!   sasl-init    ──────────────▶  (authenticator decides)
//!                ◀──────────────  sasl-outcome
//!   AMQP header  ──────────────▶  (on success, both restart with the AMQP header)
//! ```

use bytes::Bytes;

use super::{Connection, ConnectionConfig, Event, Phase};
use crate::codec::Symbol;
use crate::frame::{
    Error, ErrorCondition, SaslCode, SaslFrame, SaslInit, SaslMechanisms, SaslOutcome,
};

use super::config::{SaslCredentials, SaslVerdict};

/// Where the SASL exchange is.
#[derive(Debug)]
pub(super) enum SaslState {
    /// No SASL on this connection, or not started.
    Idle,
    /// Client: waiting for `sasl-mechanisms`.
    AwaitMechanisms,
    /// Client: `sasl-init` sent with this mechanism; waiting for `sasl-outcome`.
    AwaitOutcome(Symbol),
    /// Server: `sasl-mechanisms` sent; waiting for `sasl-init`.
    AwaitInit,
    /// Finished successfully.
    Done,
}

impl SaslState {
    pub(super) fn new(config: &ConnectionConfig) -> Self {
        match (&config.sasl_client, config.side) {
            (Some(_), super::Side::Client) => SaslState::AwaitMechanisms,
            _ => SaslState::Idle,
        }
    }

    pub(super) fn done(&self) -> bool {
        matches!(self, SaslState::Done)
    }
}

/// Decodes a client's initial response for a mechanism we understand.
fn credentials(mechanism: &str, response: &[u8]) -> Option<SaslCredentials> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let opt = |s: String| (!s.is_empty()).then_some(s);
    match mechanism {
        "ANONYMOUS" => Some(SaslCredentials::Anonymous {
            trace: text(response).and_then(opt),
        }),
        "PLAIN" => {
            let mut parts = response.split(|&b| b == 0);
            let authzid = text(parts.next()?)?;
            let username = text(parts.next()?)?;
            let password = text(parts.next()?)?;
            if parts.next().is_some() {
                return None;
            }
            Some(SaslCredentials::Plain {
                authzid: opt(authzid),
                username,
                password,
            })
        }
        "EXTERNAL" => Some(SaslCredentials::External {
            authzid: text(response).and_then(opt),
        }),
        _ => None,
    }
}

impl Connection {
    pub(super) fn sasl_server_start(&mut self) {
        let mechanisms = self
            .config
            .sasl_server
            .as_ref()
            .map(|s| s.authenticator.mechanisms())
            .unwrap_or_default();
        self.sasl = SaslState::AwaitInit;
        self.write_sasl_frame(SaslFrame::SaslMechanisms(SaslMechanisms {
            sasl_server_mechanisms: mechanisms,
        }));
    }

    pub(super) fn handle_sasl(&mut self, frame: SaslFrame) {
        let state = std::mem::replace(&mut self.sasl, SaslState::Idle);
        match (state, frame) {
            (SaslState::AwaitMechanisms, SaslFrame::SaslMechanisms(m)) => self.sasl_choose(m),
            (SaslState::AwaitOutcome(mechanism), SaslFrame::SaslOutcome(o)) => {
                self.sasl_client_outcome(mechanism, o)
            }
            (SaslState::AwaitInit, SaslFrame::SaslInit(init)) => self.sasl_server_init(init),
            (state, frame) => {
                self.sasl = state;
                self.fail_transport(Error::new(
                    ErrorCondition::NotAllowed,
                    format!("unexpected {} during SASL negotiation", frame.name()),
                ));
            }
        }
    }

    fn sasl_choose(&mut self, offered: SaslMechanisms) {
        let Some(client) = self.config.sasl_client.clone() else {
            return;
        };
        let chosen = client
            .preference()
            .into_iter()
            .find(|m| offered.sasl_server_mechanisms.contains(m));
        let Some(mechanism) = chosen else {
            self.fail_transport(Error::new(
                ErrorCondition::UnauthorizedAccess,
                format!(
                    "no SASL mechanism in common: the server offers {:?}",
                    offered
                        .sasl_server_mechanisms
                        .iter()
                        .map(Symbol::as_str)
                        .collect::<Vec<_>>()
                ),
            ));
            return;
        };
        let response = match mechanism.as_str() {
            "PLAIN" => {
                let user = client.username.unwrap_or_default();
                let pass = client.password.unwrap_or_default();
                Some(Bytes::from(format!("\0{user}\0{pass}")))
            }
            "ANONYMOUS" => Some(Bytes::from_static(b"anonymous")),
            _ => Some(Bytes::new()),
        };
        self.write_sasl_frame(SaslFrame::SaslInit(SaslInit {
            mechanism: mechanism.clone(),
            initial_response: response,
            hostname: self.config.hostname.clone(),
        }));
        self.sasl = SaslState::AwaitOutcome(mechanism);
    }

    fn sasl_client_outcome(&mut self, mechanism: Symbol, outcome: SaslOutcome) {
        if outcome.code != SaslCode::Ok {
            self.fail_transport(Error::new(
                ErrorCondition::UnauthorizedAccess,
                format!(
                    "SASL {mechanism} authentication failed ({:?})",
                    outcome.code
                ),
            ));
            return;
        }
        self.sasl = SaslState::Done;
        self.events.push_back(Event::Authenticated {
            mechanism,
            user: None,
        });
        self.phase = Phase::Header;
        self.write_amqp_header();
    }

    fn sasl_server_init(&mut self, init: SaslInit) {
        let Some(server) = self.config.sasl_server.clone() else {
            return;
        };
        let offered = server.authenticator.mechanisms();
        let response = init.initial_response.as_deref().unwrap_or_default();
        let verdict = match credentials(init.mechanism.as_str(), response) {
            Some(creds) if offered.contains(&init.mechanism) => server
                .authenticator
                .authenticate(&creds, init.hostname.as_deref()),
            _ => SaslVerdict::Reject(SaslCode::Auth),
        };
        match verdict {
            SaslVerdict::Accept(user) => {
                self.write_sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
                    code: SaslCode::Ok,
                    additional_data: None,
                }));
                self.sasl = SaslState::Done;
                self.phase = Phase::Header;
                self.events.push_back(Event::Authenticated {
                    mechanism: init.mechanism,
                    user: Some(user),
                });
            }
            SaslVerdict::Reject(code) => {
                self.write_sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
                    code,
                    additional_data: None,
                }));
                self.fail_transport(Error::new(
                    ErrorCondition::UnauthorizedAccess,
                    format!("SASL {} authentication refused", init.mechanism),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials_are_split_on_nul() {
        assert_eq!(
            credentials("PLAIN", b"\0user\0pass"),
            Some(SaslCredentials::Plain {
                authzid: None,
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(credentials("PLAIN", b"user-only"), None);
        assert_eq!(credentials("PLAIN", b"a\0b\0c\0d"), None);
        assert_eq!(
            credentials("ANONYMOUS", b""),
            Some(SaslCredentials::Anonymous { trace: None })
        );
        assert_eq!(credentials("SCRAM-SHA-1", b""), None);
    }
}
