//! SASL negotiation, client and server [AMQP 1.0 §5.3]: ANONYMOUS, PLAIN and EXTERNAL in one step, and
//! SCRAM-SHA-1/256/512 with one challenge [RFC 5802, RFC 7677].
//!
//! ```text
//! client                         server
//!   SASL header  ──────────────▶
//!                ◀──────────────  SASL header, sasl-mechanisms
//!   sasl-init    ──────────────▶  (authenticator decides, or SCRAM looks up the user)
//!                ◀──────────────  sasl-challenge     ┐ SCRAM only: server-first, client-final; some
//!   sasl-response ─────────────▶                     ┘ servers also send server-final as a challenge
//!                ◀──────────────  sasl-outcome (SCRAM: server-final in additional-data)
//!   AMQP header  ──────────────▶  (on success, both restart with the AMQP header)
//! ```
//!
//! The exchange is bounded by construction: a server takes one response per challenge it sent and sends at most
//! one challenge; a client answers at most two challenges. Any other SASL frame fails the transport, as does a
//! frame over the 512 bytes allowed before `open` [AMQP 1.0 §2.4.1].

use bytes::Bytes;

use super::scram::{ClientFirst, ScramClient, ScramHash, ScramServer};
use super::{Connection, ConnectionConfig, Event, Phase};
use crate::codec::Symbol;
use crate::frame::{
    Error, ErrorCondition, SaslChallenge, SaslCode, SaslFrame, SaslInit, SaslMechanisms,
    SaslOutcome, SaslResponse,
};

use super::config::{SaslCredentials, SaslVerdict};

/// A server's SCRAM exchange, and the hostname the client's `sasl-init` named (for the authenticator).
pub(super) struct ServerScram {
    scram: ScramServer,
    hostname: Option<String>,
}

/// Where the SASL exchange is.
pub(super) enum SaslState {
    /// No SASL on this connection, or not started.
    Idle,
    /// Client: waiting for `sasl-mechanisms`.
    AwaitMechanisms,
    /// Client: `sasl-init` sent with this single-step mechanism; waiting for `sasl-outcome`.
    AwaitOutcome(Symbol),
    /// Client: in a SCRAM exchange; waiting for a `sasl-challenge` or the `sasl-outcome`.
    ClientScram(Box<ScramClient>),
    /// Server: `sasl-mechanisms` sent; waiting for `sasl-init`.
    AwaitInit,
    /// Server: SCRAM server-first sent in a `sasl-challenge`; waiting for the `sasl-response`.
    ServerScram(Box<ServerScram>),
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

/// Decodes a client's initial response for a single-step mechanism we understand.
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
    /// What the server offers: the authenticator's mechanisms, without PLAIN where the transport does not
    /// allow it, and with EXTERNAL first where the transport gave an identity.
    fn offered_mechanisms(&self) -> Vec<Symbol> {
        let mut mechanisms = self
            .config
            .sasl_server
            .as_ref()
            .map(|s| s.authenticator.mechanisms())
            .unwrap_or_default();
        if let Some(t) = &self.transport {
            if !t.plain_allowed {
                mechanisms.retain(|m| m.as_str() != "PLAIN");
            }
            mechanisms.retain(|m| m.as_str() != "EXTERNAL");
            if t.peer_identity.is_some() {
                mechanisms.insert(0, Symbol::from_static("EXTERNAL"));
            }
        }
        mechanisms
    }

    pub(super) fn sasl_server_start(&mut self) {
        let mechanisms = self.offered_mechanisms();
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
            (SaslState::ClientScram(scram), SaslFrame::SaslChallenge(c)) => {
                self.scram_client_challenge(scram, c)
            }
            (SaslState::ClientScram(scram), SaslFrame::SaslOutcome(o)) => {
                self.scram_client_outcome(&scram, o)
            }
            (SaslState::AwaitInit, SaslFrame::SaslInit(init)) => self.sasl_server_init(init),
            (SaslState::ServerScram(scram), SaslFrame::SaslResponse(r)) => {
                self.scram_server_response(&scram, r)
            }
            (state, frame) => {
                self.sasl = state;
                self.fail_transport(Error::new(
                    ErrorCondition::NotAllowed,
                    format!("unexpected {} during SASL negotiation", frame.name()),
                ));
            }
        }
    }

    // ----- client -----

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
                    "no SASL mechanism in common: the server offers {:?}, this client may use {:?}",
                    offered
                        .sasl_server_mechanisms
                        .iter()
                        .map(Symbol::as_str)
                        .collect::<Vec<_>>(),
                    client
                        .preference()
                        .iter()
                        .map(Symbol::as_str)
                        .collect::<Vec<_>>()
                ),
            ));
            return;
        };
        if let Some(hash) = ScramHash::from_mechanism(mechanism.as_str()) {
            let (Some(user), Some(pass)) = (&client.username, &client.password) else {
                return self.sasl_client_fail(&mechanism, "a user name and a password are needed");
            };
            match ScramClient::start(hash, user, pass) {
                Ok((scram, first)) => {
                    self.write_sasl_init(mechanism, Bytes::from(first));
                    self.sasl = SaslState::ClientScram(Box::new(scram));
                }
                Err(why) => self.sasl_client_fail(&mechanism, &why),
            }
            return;
        }
        let response = match mechanism.as_str() {
            "PLAIN" => {
                let user = client.username.unwrap_or_default();
                let pass = client.password.unwrap_or_default();
                Bytes::from(format!("\0{user}\0{pass}"))
            }
            "ANONYMOUS" => Bytes::from_static(b"anonymous"),
            // The user, if given, is the identity to act as; none means the certificate's own.
            "EXTERNAL" => Bytes::from(client.username.unwrap_or_default()),
            _ => Bytes::new(),
        };
        self.write_sasl_init(mechanism.clone(), response);
        self.sasl = SaslState::AwaitOutcome(mechanism);
    }

    fn write_sasl_init(&mut self, mechanism: Symbol, response: Bytes) {
        self.write_sasl_frame(SaslFrame::SaslInit(SaslInit {
            mechanism,
            initial_response: Some(response),
            hostname: self.config.hostname.clone(),
        }));
    }

    /// The client's SASL exchange failed: `amqp:unauthorized-access` (which the runtime never retries).
    fn sasl_client_fail(&mut self, mechanism: &Symbol, why: &str) {
        self.fail_transport(Error::new(
            ErrorCondition::UnauthorizedAccess,
            format!("SASL {mechanism} authentication failed: {why}"),
        ));
    }

    fn sasl_client_outcome(&mut self, mechanism: Symbol, outcome: SaslOutcome) {
        if outcome.code != SaslCode::Ok {
            return self.sasl_client_fail(
                &mechanism,
                &format!("the server answered {:?}", outcome.code),
            );
        }
        self.sasl_client_done(mechanism);
    }

    fn sasl_client_done(&mut self, mechanism: Symbol) {
        self.sasl = SaslState::Done;
        self.events.push_back(Event::Authenticated {
            mechanism,
            user: None,
        });
        self.phase = Phase::Header;
        self.write_amqp_header();
    }

    fn scram_client_challenge(&mut self, mut scram: Box<ScramClient>, challenge: SaslChallenge) {
        match scram.handle_challenge(&challenge.challenge) {
            Ok(response) => {
                self.write_sasl_frame(SaslFrame::SaslResponse(SaslResponse {
                    response: Bytes::from(response),
                }));
                self.sasl = SaslState::ClientScram(scram);
            }
            Err(why) => self.sasl_client_fail(&scram.hash().symbol(), &why),
        }
    }

    fn scram_client_outcome(&mut self, scram: &ScramClient, outcome: SaslOutcome) {
        let mechanism = scram.hash().symbol();
        if outcome.code != SaslCode::Ok {
            return self.sasl_client_outcome(mechanism, outcome);
        }
        match scram.handle_success(outcome.additional_data.as_deref()) {
            Ok(()) => self.sasl_client_done(mechanism),
            Err(why) => self.sasl_client_fail(&mechanism, &why),
        }
    }

    // ----- server -----

    fn sasl_server_init(&mut self, init: SaslInit) {
        let Some(server) = self.config.sasl_server.clone() else {
            return;
        };
        if !self.offered_mechanisms().contains(&init.mechanism) {
            return self.sasl_refuse(
                &init.mechanism,
                None,
                SaslCode::Auth,
                "the mechanism was not offered",
            );
        }
        let response = init.initial_response.as_deref().unwrap_or_default();
        let identity = self
            .transport
            .as_ref()
            .and_then(|t| t.peer_identity.clone());
        if let (Some(identity), "EXTERNAL") = (identity, init.mechanism.as_str()) {
            let verdict = match credentials("EXTERNAL", response) {
                Some(SaslCredentials::External { authzid })
                    if authzid.as_deref().is_none_or(|a| a == identity) =>
                {
                    SaslVerdict::Accept(identity.clone())
                }
                _ => SaslVerdict::Reject(SaslCode::Auth),
            };
            return self.sasl_server_verdict(init.mechanism, Some(identity), verdict, None);
        }
        if let Some(hash) = ScramHash::from_mechanism(init.mechanism.as_str()) {
            return self.scram_server_init(hash, response, init.hostname);
        }
        let creds = credentials(init.mechanism.as_str(), response);
        let verdict = match &creds {
            Some(creds) => server
                .authenticator
                .authenticate(creds, init.hostname.as_deref()),
            None => SaslVerdict::Reject(SaslCode::Auth),
        };
        let user = creds.and_then(SaslCredentials::into_user);
        self.sasl_server_verdict(init.mechanism, user, verdict, None);
    }

    fn scram_server_init(
        &mut self,
        hash: ScramHash,
        client_first: &[u8],
        hostname: Option<String>,
    ) {
        let mechanism = hash.symbol();
        let first = match ClientFirst::parse(client_first) {
            Ok(first) => first,
            Err(why) => return self.sasl_refuse(&mechanism, None, SaslCode::Auth, &why),
        };
        let user = Some(first.username().to_string());
        let credential = self
            .config
            .sasl_server
            .as_ref()
            .and_then(|s| s.authenticator.scram_credential(hash, first.username()))
            .filter(|c| c.hash() == hash);
        let Some(credential) = credential else {
            return self.sasl_refuse(
                &mechanism,
                user,
                SaslCode::Auth,
                "no credential for the user",
            );
        };
        match ScramServer::start(first, credential) {
            Ok((scram, server_first)) => {
                self.write_sasl_frame(SaslFrame::SaslChallenge(SaslChallenge {
                    challenge: Bytes::from(server_first),
                }));
                self.sasl = SaslState::ServerScram(Box::new(ServerScram { scram, hostname }));
            }
            Err(why) => self.sasl_refuse(&mechanism, user, SaslCode::Sys, &why),
        }
    }

    fn scram_server_response(&mut self, state: &ServerScram, response: SaslResponse) {
        let scram = &state.scram;
        let mechanism = scram.hash().symbol();
        let user = Some(scram.username().to_string());
        let server_final = match scram.handle_client_final(&response.response) {
            Ok(server_final) => server_final,
            Err(why) => return self.sasl_refuse(&mechanism, user, SaslCode::Auth, &why),
        };
        let credentials = SaslCredentials::Scram {
            hash: scram.hash(),
            username: scram.username().to_string(),
            authzid: scram.authzid().map(String::from),
        };
        let verdict = match &self.config.sasl_server {
            Some(s) => s
                .authenticator
                .authenticate(&credentials, state.hostname.as_deref()),
            None => SaslVerdict::Reject(SaslCode::Auth),
        };
        self.sasl_server_verdict(mechanism, user, verdict, Some(Bytes::from(server_final)));
    }

    /// Sends the outcome of `verdict` on the login of `user` (as the client named it); on success
    /// `additional_data` goes with it.
    fn sasl_server_verdict(
        &mut self,
        mechanism: Symbol,
        user: Option<String>,
        verdict: SaslVerdict,
        additional_data: Option<Bytes>,
    ) {
        match verdict {
            SaslVerdict::Accept(user) => {
                self.write_sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
                    code: SaslCode::Ok,
                    additional_data,
                }));
                self.sasl = SaslState::Done;
                self.phase = Phase::Header;
                self.events.push_back(Event::Authenticated {
                    mechanism,
                    user: Some(user),
                });
            }
            SaslVerdict::Reject(code) => {
                self.sasl_refuse(&mechanism, user, code, "the authenticator refused")
            }
        }
    }

    /// Sends a failed `sasl-outcome` and ends the transport with `amqp:unauthorized-access`. `why` stays local:
    /// the client learns only the code.
    fn sasl_refuse(&mut self, mechanism: &Symbol, user: Option<String>, code: SaslCode, why: &str) {
        self.events.push_back(Event::AuthenticationFailed {
            mechanism: Some(mechanism.clone()),
            user,
        });
        self.write_sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
            code,
            additional_data: None,
        }));
        self.fail_transport(Error::new(
            ErrorCondition::UnauthorizedAccess,
            format!("SASL {mechanism} authentication refused: {why}"),
        ));
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
