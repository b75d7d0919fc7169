//! Where the CLI finds its server and credentials: `$XDG_CONFIG_HOME/drover/` (default
//! `~/.config/drover/`) holds `config.toml` (url, token) and `ca.pem`, both mode 0600, written
//! by `drover login` and `drover up`; `DROVER_URL`, `DROVER_TOKEN` and `DROVER_CA` override them.
//! Not the daemons' settings (that is `drover_api::config`).

use crate::CliError;
use drover_client::Client;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const CONFIG_FILE: &str = "config.toml";
const CA_FILE: &str = "ca.pem";

/// What `config.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The CLI's configuration directory.
pub fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            PathBuf::from(home).join(".config")
        });
    base.join("drover")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// A CA given as PEM text or as the path of a PEM file.
pub fn read_ca(value: &str) -> Result<String, CliError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.to_owned());
    }
    let path = Path::new(value);
    std::fs::read_to_string(path).map_err(|error| CliError::io("read the CA file", path, &error))
}

/// The stored login, empty when there is none.
pub fn load(dir: &Path) -> Result<StoredLogin, CliError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StoredLogin::default());
        }
        Err(error) => return Err(CliError::io("read", &path, &error)),
    };
    toml::from_str(&text).map_err(|error| {
        CliError::local(
            "invalid_cli_config",
            format!("{} is not valid: {error}", path.display()),
            "run `drover login` again, or fix or delete the file",
        )
    })
}

/// The stored CA certificate, if any.
pub fn load_ca(dir: &Path) -> Result<Option<String>, CliError> {
    let path = dir.join(CA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CliError::io("read", &path, &error)),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| CliError::io("write", path, &error))?;
    // `mode` applies only when the file is created; an older file may be more open.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents.as_bytes()))
        .map_err(|error| CliError::io("write", path, &error))
}

/// Stores a login in `dir` (created 0700 if missing), files mode 0600.
pub fn save(dir: &Path, url: &str, token: &str, ca_pem: &str) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| CliError::io("create", dir, &error))?;
    let login = StoredLogin {
        url: Some(url.to_owned()),
        token: Some(token.to_owned()),
    };
    let text = toml::to_string(&login).map_err(|error| {
        CliError::local(
            "invalid_cli_config",
            format!("cannot encode the login: {error}"),
            "report this as a bug",
        )
    })?;
    write_private(&dir.join(CA_FILE), ca_pem)?;
    write_private(&dir.join(CONFIG_FILE), &text)
}

/// The server URL in force: `DROVER_URL`, else the stored one.
pub fn server_url(dir: &Path) -> Result<Option<String>, CliError> {
    Ok(env("DROVER_URL").or(load(dir)?.url))
}

/// A client for the server and token in force, from the environment or the stored login.
pub fn client() -> Result<Client, CliError> {
    let dir = config_dir();
    let stored = load(&dir)?;
    let not_logged_in = |what: &str| {
        CliError::local(
            "not_logged_in",
            format!("no {what}: the CLI is not logged in to a Drover server"),
            "run `drover login https://SERVER:8100`, or set DROVER_URL, DROVER_TOKEN and DROVER_CA",
        )
    };
    let url = env("DROVER_URL")
        .or(stored.url)
        .ok_or_else(|| not_logged_in("server URL"))?;
    let token = env("DROVER_TOKEN").or(stored.token);
    let ca_pem = match env("DROVER_CA") {
        Some(value) => read_ca(&value)?,
        None => load_ca(&dir)?.ok_or_else(|| not_logged_in("server CA certificate"))?,
    };
    Ok(Client::new(&url, token, &ca_pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_login_reads_back_and_is_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("drover");
        assert_eq!(load(&config).expect("empty"), StoredLogin::default());
        save(&config, "https://localhost:8100", "t0ken", "PEM").expect("save");
        save(&config, "https://localhost:9100", "t1ken", "PEM2").expect("save again");
        let login = load(&config).expect("load");
        assert_eq!(login.url.as_deref(), Some("https://localhost:9100"));
        assert_eq!(login.token.as_deref(), Some("t1ken"));
        assert_eq!(load_ca(&config).expect("ca").as_deref(), Some("PEM2"));
        for file in [CONFIG_FILE, CA_FILE] {
            let mode = std::fs::metadata(config.join(file))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn ca_as_text_or_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nX\n").expect("write");
        let from_file = read_ca(path.to_str().expect("utf-8 path")).expect("file");
        assert_eq!(read_ca(&from_file).expect("text"), from_file);
        let missing = read_ca("/nonexistent/ca.pem").expect_err("missing");
        assert_eq!(missing.detail().code, "io_error");
    }
}
