//! Who may use the relay: which web pages may open its WebSocket (the `Origin` rule), and the password
//! relays use on the embedded broker (made at start, or shared through a file only its owner may read).

use std::io::Write as _;
use std::path::Path;

use actix_web::http::header;
use actix_web::HttpRequest;
use nucleon_examples::hosts::HostSet;

/// The user relays log in as on a broker that wants one, unless `--broker-user` says otherwise.
pub const DEFAULT_BROKER_USER: &str = "chat_relay";

/// Checks an `--allow-origin` value for clap: `http://HOST[:PORT]` or `https://HOST[:PORT]`, with no path,
/// as a browser sends it in `Origin`. Returns it lowercased.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(host)
            if !host.is_empty()
                && !host.contains(['/', '?', '#', '@', ' '])
                && !host.starts_with(':') =>
        {
            Ok(lower)
        }
        _ => Err(format!(
            "expected an origin such as https://chat.example.com or http://127.0.0.1:8080, got {s:?}"
        )),
    }
}

/// Whether the request names one of `hosts` (its absolute-form authority, else its one `Host` header).
pub fn check_host(req: &HttpRequest, hosts: &HostSet) -> Result<(), String> {
    let mut headers = req.headers().get_all(header::HOST);
    let header = headers.next();
    if headers.next().is_some() {
        return Err("more than one Host header".to_owned());
    }
    let host = match req.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => header.and_then(|h| h.to_str().ok()).map(str::to_owned),
    };
    match host {
        Some(h) if hosts.contains(&h) => Ok(()),
        Some(h) => Err(format!(
            "it names host {:?}, not this relay's",
            h.chars().take(100).collect::<String>()
        )),
        None => Err("it names no host".to_owned()),
    }
}

/// The origin of the page this request's `Host` names: `http://HOST[:PORT]` (the scheme and host a proxy
/// reports in `Forwarded` or `X-Forwarded-*` win; a browser cannot set those on a WebSocket).
pub fn own_origin(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host()).to_ascii_lowercase()
}

/// Whether a WebSocket upgrade may proceed. A browser always sends `Origin` with a WebSocket handshake
/// (RFC 6455 §4.1) and a page cannot change it: it must be the relay's own origin (see [`own_origin`]) or
/// one of `allowed`. A request without `Origin` is not from a browser page (a command-line tool, a test,
/// a bot): such a client could send any `Origin` it likes, so refusing it would protect nothing, and it is
/// let in. The error is the line to log.
pub fn check_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let shown = String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(200)
        .collect::<String>();
    let Ok(origin) = origin.to_str() else {
        return Err(format!("an Origin that is not ASCII ({shown:?})"));
    };
    let origin = origin.to_ascii_lowercase();
    let own = own_origin(req);
    if origin == own || allowed.contains(&origin) {
        Ok(())
    } else {
        Err(format!(
            "Origin {shown:?} is neither this relay's ({own}) nor one --allow-origin lists"
        ))
    }
}

/// A new random password: 32 bytes from the operating system, base64url (43 characters).
pub fn random_password() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random password: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The password in `path` (its first line). On Unix the file must not be readable or writable by group or
/// others, as ssh asks of its keys.
pub fn read_password(path: &Path) -> Result<String, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("--broker-password-file {shown}: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--broker-password-file {shown}: other users may read it (mode {:o}): chmod 600 it",
                mode & 0o777
            ));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--broker-password-file {shown}: {e}"))?;
    let password = text.lines().next().unwrap_or_default().trim();
    if password.is_empty() {
        return Err(format!("--broker-password-file {shown}: empty"));
    }
    Ok(password.to_owned())
}

/// For the embedded broker: the password in `path`, or, if there is no such file, a new random one written
/// there (created with mode 0600, so that only this user may read it). Other relays read it with
/// `--broker-password-file` too.
pub fn read_or_create_password(path: &Path) -> Result<String, String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            let password = random_password()?;
            writeln!(file, "{password}")
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("--broker-password-file {}: {e}", path.display()))?;
            log::info!(
                "wrote a new random broker password to {} (mode 0600)",
                path.display()
            );
            Ok(password)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_password(path),
        Err(e) => Err(format!("--broker-password-file {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn origins_parse_as_a_browser_sends_them() {
        assert_eq!(
            parse_origin("HTTPS://Chat.Example.com"),
            Ok("https://chat.example.com".to_owned())
        );
        assert!(parse_origin("http://127.0.0.1:8080").is_ok());
        for bad in [
            "chat.example.com",
            "https://",
            "https://x/",
            "https://x/path",
            "ftp://x",
            "null",
            "https://u@x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_own_origin_or_a_listed_one_may_upgrade() {
        let req = |origin: Option<&str>| {
            let r = TestRequest::get()
                .uri("/ws")
                .insert_header((header::HOST, "127.0.0.1:8080"));
            match origin {
                Some(o) => r.insert_header((header::ORIGIN, o)),
                None => r,
            }
            .to_http_request()
        };
        let listed = vec!["https://chat.example.com".to_owned()];
        assert!(check_origin(&req(Some("http://127.0.0.1:8080")), &[]).is_ok());
        assert!(check_origin(&req(Some("HTTP://127.0.0.1:8080")), &[]).is_ok());
        assert!(check_origin(&req(None), &[]).is_ok());
        assert!(check_origin(&req(Some("http://evil.example")), &[]).is_err());
        assert!(check_origin(&req(Some("http://127.0.0.1:8081")), &[]).is_err());
        assert!(check_origin(&req(Some("https://127.0.0.1:8080")), &[]).is_err());
        assert!(check_origin(&req(Some("null")), &[]).is_err());
        assert!(check_origin(&req(Some("https://chat.example.com")), &listed).is_ok());
        assert!(check_origin(&req(Some("https://chat.example.com")), &[]).is_err());
    }

    #[test]
    fn a_password_file_is_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("chat-relay-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("a scratch folder");
        let path = dir.join("password");
        let made = read_or_create_password(&path).expect("created");
        assert_eq!(made.len(), 43);
        assert_eq!(read_or_create_password(&path), Ok(made.clone()));
        assert_eq!(read_password(&path), Ok(made));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(read_password(&path).unwrap_err().contains("chmod 600"));
        }
        assert!(read_password(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
