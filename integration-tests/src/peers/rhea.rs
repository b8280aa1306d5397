//! rhea 3.x, the JavaScript AMQP 1.0 library, as a peer: one `node` process per test binary running
//! `integration-tests/peers/rhea/peer.mjs` (its packages pinned by that folder's `package-lock.json` and
//! installed by `scripts/install-test-deps.sh`).
//!
//! The process prints `{"control":PORT}` once ready and then serves control connections on that loopback
//! port: each connection runs one operation (its first line is a JSON command, the peer answers with JSON
//! lines), so tests running in parallel share the process without sharing a stream. The script documents
//! its operations. Like every [`PeerProcess`], it exits when its standard input closes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{workspace_root, PeerProcess};

/// The rhea peer process of this test binary.
#[derive(Debug)]
pub struct Rhea {
    /// The loopback port on which it takes control connections.
    pub control_port: u16,
    _process: Mutex<PeerProcess>,
}

impl Rhea {
    /// The folder holding the peer script and its npm packages.
    pub fn dir() -> PathBuf {
        workspace_root().join("integration-tests/peers/rhea")
    }

    /// The test binary's rhea peer, started on first use. Fails the test if node or rhea is missing or the
    /// script does not start.
    pub fn shared() -> &'static Rhea {
        static PEER: OnceLock<Result<Rhea, String>> = OnceLock::new();
        let peer = PEER.get_or_init(|| {
            let dir = Rhea::dir();
            if !dir.join("node_modules/rhea/package.json").is_file() {
                return Err(format!("{} has no node_modules/rhea", dir.display()));
            }
            let mut command = Command::new("node");
            command.arg("peer.mjs").current_dir(&dir);
            let (process, line) =
                PeerProcess::start("rhea", command, "\"control\"", Duration::from_secs(30))?;
            let control_port = line
                .trim()
                .strip_prefix("{\"control\":")
                .and_then(|rest| rest.strip_suffix('}'))
                .and_then(|port| port.parse().ok())
                .ok_or_else(|| format!("rhea printed an unexpected ready line: {line}"))?;
            Ok(Rhea {
                control_port,
                _process: Mutex::new(process),
            })
        });
        match peer {
            Ok(p) => p,
            Err(e) => panic!(
                "rhea is required (scripts/install-test-deps.sh runs npm ci for it; node 20+ must be on PATH): {e}"
            ),
        }
    }
}
