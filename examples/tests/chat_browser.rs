//! The chat in a real browser: two `chat_relay` processes (A with its embedded broker, B using A's) and
//! `examples/tests/browser/chat.mjs`, which drives headless Chromium through Playwright: one page per
//! relay in the same room, messages both ways, a `<script>` message shown as text, both member lists, and
//! a page of another origin (served by the script on another port) whose WebSocket to relay A is refused.
//!
//! Needs Debian's `chromium` and `chromium-driver`, and `npm ci` in `examples/tests/browser`:
//! `scripts/install-test-deps.sh` installs all three. Without them this test fails; it never skips.
//! It saves a screenshot to `<target>/chat-screenshot.png`; with `NUCLEON_UPDATE_SCREENSHOT=1` it also copies it
//! to `docs/chat-relay.png`, the README's picture.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{run_example, Running, READY_TIMEOUT};

/// The whole browser run, Chromium's start included.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

const CHROMIUM: &str = "/usr/bin/chromium";

/// Starts a relay on a free HTTP port with `args`; returns it with its HTTP and AMQP addresses.
fn relay(args: &[&str]) -> (Running, String, String) {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut process = Running::spawn(env!("CARGO_BIN_EXE_chat_relay"), &all);
    let ready = process.wait_for_line("chat_relay ready: ", READY_TIMEOUT);
    let (http, amqp) = ready
        .split_once(' ')
        .unwrap_or_else(|| panic!("two addresses in the ready line: {ready}"));
    let (http, amqp) = (http.to_owned(), amqp.to_owned());
    (process, http, amqp)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the examples crate is in the workspace")
        .to_owned()
}

/// `CARGO_TARGET_DIR` (relative to the workspace) or the workspace's `target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

#[test]
fn two_browsers_on_two_relays_chat_through_the_broker() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = "run scripts/install-test-deps.sh (as root) to install it";
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing (Debian packages chromium and chromium-driver): {missing}"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing from {} (npm ci): {missing}",
        browser_dir.display()
    );

    let target = target_dir();
    std::fs::create_dir_all(&target).expect("the target directory exists");
    // A writes its embedded broker's password here (mode 0600); B logs in with it.
    let password = target.join(format!("chat-browser-password-{}", std::process::id()));
    let _ = std::fs::remove_file(&password);
    let password_arg = password.to_string_lossy().into_owned();
    let (_a, http_a, amqp_a) = relay(&[
        "--amqp-listen",
        "127.0.0.1:0",
        "--broker-password-file",
        &password_arg,
    ]);
    let (_b, http_b, _) = relay(&["--broker", &amqp_a, "--broker-password-file", &password_arg]);
    let screenshot = target.join("chat-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);

    let script = browser_dir.join("chat.mjs");
    let out = run_example(
        "node",
        &[
            &script.to_string_lossy(),
            &http_a,
            &http_b,
            &screenshot.to_string_lossy(),
        ],
        BROWSER_TIMEOUT,
    );
    let _ = std::fs::remove_file(&password);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chat.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ok: screenshot saved"), "{stdout}");
    assert!(
        stdout.contains("ok: a page of another origin could not open the chat WebSocket"),
        "{stdout}"
    );

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // The README's picture is refreshed only on request, so a test run never changes the source tree.
    if std::env::var_os("NUCLEON_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&screenshot, workspace().join("docs/chat-relay.png"))
            .expect("the screenshot is copied for the README");
    }
}
