//! `drover login`: verify the server (a given CA, the stored one, or trust on first use with the
//! CA's fingerprint shown), trade a password for a token and store both for later commands.

use crate::CliError;
use crate::credentials;
use drover_client::Client;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

/// The API port's default, for a URL typed without a port.
const DEFAULT_URL: &str = "https://localhost:8100";

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Server URL, such as https://drover.example:8100 (default: DROVER_URL, the stored URL,
    /// or https://localhost:8100).
    pub url: Option<String>,
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible to other users of this machine; prefer --password-stdin).
    #[arg(long)]
    pub password: Option<String>,
    /// Trust the server's certificate only if the CA in this PEM file issued it.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Trust the CA the server presents if its SHA-256 fingerprint is this one.
    #[arg(long, value_name = "FP", conflicts_with_all = ["ca", "yes"])]
    pub trust_fingerprint: Option<String>,
    /// Trust the CA the server presents without asking.
    #[arg(long, short = 'y', conflicts_with = "ca")]
    pub yes: bool,
    /// Lifetime of the token in seconds (default: the server's, 7 days).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
}

/// Fingerprints compare without colons, spaces or case.
fn normalize_fingerprint(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn ask_yes_no(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::local(
            "untrusted_server",
            "cannot ask whether to trust the server: standard input is not a terminal",
            "pass --trust-fingerprint FP (compare it with the fingerprint shown by `drover up` or `drover server`), --yes or --ca FILE",
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| CliError::io("read", std::path::Path::new("stdin"), &error))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Decides which CA to trust for `url`.
async fn trusted_ca(args: &LoginArgs, url: &str) -> Result<String, CliError> {
    if let Some(path) = &args.ca {
        return credentials::read_ca(&path.to_string_lossy());
    }
    let dir = credentials::config_dir();
    let stored_url = credentials::load(&dir)?.url;
    let same_server = stored_url
        .as_deref()
        .and_then(|stored| drover_client::parse_server_url(stored).ok())
        == drover_client::parse_server_url(url).ok();
    if args.trust_fingerprint.is_none()
        && same_server
        && let Some(ca_pem) = credentials::load_ca(&dir)?
    {
        return Ok(ca_pem);
    }
    let presented = drover_client::fetch_server_ca(url).await?;
    eprintln!("The server at {url} presents a certificate issued by a CA with SHA-256 fingerprint");
    eprintln!("  {}", presented.fingerprint);
    let trusted = match &args.trust_fingerprint {
        Some(expected) => {
            normalize_fingerprint(expected) == normalize_fingerprint(&presented.fingerprint)
        }
        None => args.yes || ask_yes_no("Trust this CA for this server?")?,
    };
    if !trusted {
        return Err(CliError::local(
            "untrusted_server",
            format!(
                "the CA of {url} was not trusted (fingerprint {})",
                presented.fingerprint
            ),
            "compare the fingerprint with the one `drover up` or `drover server` printed, then log in again",
        ));
    }
    Ok(presented.ca_pem)
}

/// Reads a password from the terminal without echoing it.
fn prompt_password(user: &str) -> Result<String, CliError> {
    eprint!("Password for {user}: ");
    let _ = std::io::stderr().flush();
    let raw = crate::console::RawMode::enable()?;
    let mut password = Vec::new();
    let mut byte = [0u8; 1];
    let stdin_failed =
        |error: std::io::Error| CliError::io("read", std::path::Path::new("stdin"), &error);
    loop {
        if std::io::stdin().read(&mut byte).map_err(stdin_failed)? == 0 {
            break;
        }
        match byte[0] {
            b'\r' | b'\n' => break,
            // Ctrl-C and Ctrl-D abort: raw mode delivers them as bytes.
            0x03 | 0x04 => {
                drop(raw);
                eprintln!();
                return Err(CliError::local(
                    "canceled",
                    "login canceled",
                    "run `drover login` again",
                ));
            }
            0x7f | 0x08 => {
                password.pop();
            }
            other => password.push(other),
        }
    }
    drop(raw);
    eprintln!();
    String::from_utf8(password).map_err(|_| {
        CliError::local(
            "invalid_password",
            "the password is not valid UTF-8",
            "type it again",
        )
    })
}

fn password(args: &LoginArgs) -> Result<String, CliError> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| CliError::io("read", std::path::Path::new("stdin"), &error))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    prompt_password(&args.user)
}

pub async fn login(args: &LoginArgs) -> Result<(), CliError> {
    let dir = credentials::config_dir();
    let url = match &args.url {
        Some(url) => url.clone(),
        None => credentials::server_url(&dir)?.unwrap_or_else(|| DEFAULT_URL.to_owned()),
    };
    let url = drover_client::parse_server_url(&url)?.to_string();
    let url = url.trim_end_matches('/').to_owned();
    let ca_pem = trusted_ca(args, &url).await?;
    let password = password(args)?;
    let client = Client::new(&url, None, &ca_pem)?;
    let session = client.login(&args.user, &password, args.ttl).await?;
    credentials::save(&dir, &url, &session.token, &ca_pem)?;
    eprintln!(
        "Logged in to {url} as {} until {} (credentials in {}).",
        session.username,
        crate::output::time(&session.expires_at),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_loosely() {
        assert_eq!(
            normalize_fingerprint("ab:CD:01"),
            normalize_fingerprint("ABCD01")
        );
        assert_ne!(
            normalize_fingerprint("AB:CD"),
            normalize_fingerprint("AB:CE")
        );
    }
}
