//! Debian's Python with Qpid Proton, as the interop tests run it.

use std::process::Command;
use std::sync::OnceLock;

/// Debian's system Python, which `python3-qpid-proton` is installed for (not the pyenv one first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";

/// Fails the calling test, loudly, unless [`PYTHON`] can import Proton. Runs Python isolated (`-I`) so a
/// `proton/` folder in the working directory cannot pass for the module.
pub fn require_proton() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let out = Command::new(PYTHON)
            .args(["-I", "-c", "from proton import Data, Message"])
            .output()
            .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = check {
        panic!("{PYTHON} cannot import proton (python3-qpid-proton); run scripts/install-test-deps.sh.\n{e}");
    }
}
