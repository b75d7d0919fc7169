//! The server's certificates in `data_dir/pki`: the built-in CA, the API endpoint's certificate and
//! the identity the server shows to agents. Loaded when present, made at first start; every file is
//! 0600. This module makes no TLS configurations of its own; `drover_tls` does.

use drover_tls::{CertificateAuthority, Identity, TlsError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make or load a certificate")]
    Tls(#[from] TlsError),
}

/// Everything the server needs to speak TLS: to clients, to agents, and to sign agents' requests.
#[derive(Debug)]
pub struct Pki {
    pub ca: CertificateAuthority,
    /// The API endpoint's certificate chain (leaf, then CA) for localhost, loopback and this host.
    pub api: Identity,
    /// The certificate the server presents to agents (mutual TLS).
    pub client: Identity,
}

impl Pki {
    /// Loads the certificates in `dir`, making those that are missing.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        create_private_dir(dir)?;
        let ca = match (read(dir, "ca.pem")?, read(dir, "ca.key")?) {
            (Some(cert_pem), Some(key_pem)) => CertificateAuthority::from_pem(&cert_pem, &key_pem)?,
            _ => {
                let ca = CertificateAuthority::generate("Drover CA")?;
                write_private(dir, "ca.key", ca.key_pem())?;
                write_private(dir, "ca.pem", ca.cert_pem())?;
                ca
            }
        };
        let api = load_or_issue(dir, "api", || ca.issue("drover-server", &api_names()))?;
        let client = load_or_issue(dir, "client", || {
            ca.issue("drover-server-client", &["drover-server".to_owned()])
        })?;
        Ok(Pki { ca, api, client })
    }
}

/// The names a client may reach the API by on this machine.
fn api_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(hostname) = machine_hostname()
        && !names.contains(&hostname)
    {
        names.push(hostname);
    }
    names
}

pub fn machine_hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|name| !name.is_empty())
}

fn load_or_issue(
    dir: &Path,
    stem: &str,
    issue: impl FnOnce() -> Result<Identity, TlsError>,
) -> Result<Identity, PkiError> {
    let cert_file = format!("{stem}.pem");
    let key_file = format!("{stem}.key");
    if let (Some(cert_pem), Some(key_pem)) = (read(dir, &cert_file)?, read(dir, &key_file)?) {
        return Ok(Identity { cert_pem, key_pem });
    }
    let identity = issue()?;
    write_private(dir, &key_file, &identity.key_pem)?;
    write_private(dir, &cert_file, &identity.cert_pem)?;
    Ok(identity)
}

fn read(dir: &Path, name: &str) -> Result<Option<String>, PkiError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { path, source }),
    }
}

fn write_private(dir: &Path, name: &str, text: &str) -> Result<(), PkiError> {
    let path = dir.join(name);
    let io_error = |source| PkiError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)
}

/// Makes `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let io_error = |source| PkiError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_loaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki_dir = dir.path().join("pki");
        let first = Pki::load_or_create(&pki_dir).expect("create");
        let second = Pki::load_or_create(&pki_dir).expect("load");
        assert_eq!(first.ca.cert_pem(), second.ca.cert_pem());
        assert_eq!(first.api, second.api);
        assert!(
            first.api.cert_pem.ends_with(first.ca.cert_pem()),
            "chain carries the CA"
        );
        for entry in std::fs::read_dir(&pki_dir).expect("list") {
            let mode = entry
                .expect("entry")
                .metadata()
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
