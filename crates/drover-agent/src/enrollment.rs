//! Enrollment: how an agent comes to trust one server. At first start the agent has a
//! self-signed certificate and a one-time code; a server that knows the code gets a certificate
//! request, signs it with its CA and sends it back; from then on the listener asks every client
//! for a certificate from that CA. This module keeps those files in `<data_dir>/tls/` and swaps
//! the listener's TLS configuration; it does not serve HTTP (see `http::enroll`).

use crate::error::AgentError;
use crate::store::{self, Access, StoreError};
use axum_server::tls_rustls::RustlsConfig;
use drover_api::agent::{EnrollComplete, EnrollCsr};
use drover_tls::Identity;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use subtle::ConstantTimeEq;

/// Letters and digits that cannot be mistaken for one another when read aloud or typed.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("cannot read or write the agent's TLS files")]
    Store(#[from] StoreError),
    #[error("cannot make or load the agent's TLS identity")]
    Tls(#[from] drover_tls::TlsError),
}

/// The agent's TLS files.
#[derive(Debug, Clone)]
struct Files {
    tls_dir: PathBuf,
    code: PathBuf,
}

impl Files {
    fn new(data_dir: &Path) -> Self {
        Self {
            tls_dir: data_dir.join("tls"),
            code: data_dir.join("enrollment-code"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.tls_dir.join(name)
    }
    fn bootstrap_cert(&self) -> PathBuf {
        self.path("bootstrap.crt")
    }
    fn bootstrap_key(&self) -> PathBuf {
        self.path("bootstrap.key")
    }
    fn pending_key(&self) -> PathBuf {
        self.path("pending.key")
    }
    fn agent_cert(&self) -> PathBuf {
        self.path("agent.crt")
    }
    fn agent_key(&self) -> PathBuf {
        self.path("agent.key")
    }
    fn ca_cert(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for a server that knows this code.
    Waiting {
        code: String,
    },
    Enrolled,
}

/// The agent's enrollment state and the listener's TLS configuration it controls.
pub struct Enrollment {
    files: Files,
    hostname: String,
    phase: Mutex<Phase>,
    tls: RustlsConfig,
}

/// A new code: four groups of four characters, such as `K7QM-2XPA-N4RT-9BWE`.
pub fn generate_code() -> String {
    let mut rng = rand::rng();
    let groups: Vec<String> = (0..4)
        .map(|_| {
            (0..4)
                .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
                .collect()
        })
        .collect();
    groups.join("-")
}

/// People type codes with other case and spacing; compare what they mean.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Compares in time independent of where the codes differ, so that timing reveals nothing.
fn codes_match(expected: &str, offered: &str) -> bool {
    let expected = normalize_code(expected);
    let offered = normalize_code(offered);
    bool::from(expected.as_bytes().ct_eq(offered.as_bytes()))
}

fn load_identity(cert: &Path, key: &Path) -> Result<Option<Identity>, StoreError> {
    match (store::read_optional(cert)?, store::read_optional(key)?) {
        (Some(cert_pem), Some(key_pem)) => Ok(Some(Identity { cert_pem, key_pem })),
        _ => Ok(None),
    }
}

impl Enrollment {
    /// Loads the agent's TLS state from `data_dir`, or begins enrollment when it has none.
    /// `fixed_code` replaces the stored code of an agent that is not yet enrolled.
    pub fn open(data_dir: &Path, fixed_code: Option<String>) -> Result<Self, EnrollmentError> {
        let files = Files::new(data_dir);
        store::create_private_dir(&files.tls_dir)?;
        let hostname = crate::host::hostname();
        let enrolled = load_identity(&files.agent_cert(), &files.agent_key())?
            .zip(store::read_optional(&files.ca_cert())?);
        let (phase, server_config) = match enrolled {
            Some((identity, ca_pem)) => (
                Phase::Enrolled,
                drover_tls::server_config(&identity, Some(&ca_pem))?,
            ),
            None => {
                let identity = match load_identity(&files.bootstrap_cert(), &files.bootstrap_key())?
                {
                    Some(identity) => identity,
                    None => {
                        // Kept across restarts so that the fingerprint a user may have noted stays.
                        let identity = drover_tls::self_signed(&hostname, &["localhost".into()])?;
                        store::write_atomic(
                            &files.bootstrap_key(),
                            identity.key_pem.as_bytes(),
                            Access::Secret,
                        )?;
                        store::write_atomic(
                            &files.bootstrap_cert(),
                            identity.cert_pem.as_bytes(),
                            Access::Public,
                        )?;
                        identity
                    }
                };
                let code = match (fixed_code, store::read_optional(&files.code)?) {
                    (Some(code), _) => code,
                    (None, Some(stored)) if !stored.trim().is_empty() => stored.trim().to_owned(),
                    (None, _) => generate_code(),
                };
                store::write_atomic(&files.code, code.as_bytes(), Access::Secret)?;
                (
                    Phase::Waiting { code },
                    drover_tls::server_config(&identity, None)?,
                )
            }
        };
        Ok(Self {
            files,
            hostname,
            phase: Mutex::new(phase),
            tls: RustlsConfig::from_config(Arc::new(server_config)),
        })
    }

    /// The listener's TLS configuration; enrollment replaces it in place.
    pub fn tls_config(&self) -> RustlsConfig {
        self.tls.clone()
    }

    /// The code a server must present, while the agent waits for one.
    pub fn pending_code(&self) -> Option<String> {
        match &*self.lock() {
            Phase::Waiting { code } => Some(code.clone()),
            Phase::Enrolled => None,
        }
    }

    pub fn is_enrolled(&self) -> bool {
        *self.lock() == Phase::Enrolled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_code(phase: &Phase, offered: &str) -> Result<(), AgentError> {
        match phase {
            Phase::Enrolled => Err(AgentError::AlreadyEnrolled),
            Phase::Waiting { code } if codes_match(code, offered) => Ok(()),
            Phase::Waiting { .. } => Err(AgentError::EnrollmentCodeInvalid),
        }
    }

    /// First step: a fresh key (kept here) and a certificate request for it.
    pub fn begin(&self, offered_code: &str) -> Result<EnrollCsr, AgentError> {
        let phase = self.lock();
        Self::check_code(&phase, offered_code)?;
        let (csr_pem, key_pem) = drover_tls::certificate_request(&self.hostname)
            .map_err(|error| AgentError::Internal(error.into()))?;
        store::write_atomic(
            &self.files.pending_key(),
            key_pem.as_bytes(),
            Access::Secret,
        )
        .map_err(|error| AgentError::Internal(error.into()))?;
        tracing::info!("enrollment begun: certificate request issued");
        Ok(EnrollCsr {
            csr_pem,
            hostname: self.hostname.clone(),
        })
    }

    /// The agent's certificate and key and its server's CA (PEM), once enrolled: what it shows
    /// other agents, and what QEMU uses for migration streams.
    pub fn peer_identity(&self) -> Result<(Identity, String), AgentError> {
        if !self.is_enrolled() {
            return Err(AgentError::NotEnrolled);
        }
        let internal = |error: StoreError| AgentError::Internal(error.into());
        let identity = load_identity(&self.files.agent_cert(), &self.files.agent_key())
            .map_err(internal)?
            .ok_or(AgentError::NotEnrolled)?;
        let ca_pem = store::read_optional(&self.files.ca_cert())
            .map_err(internal)?
            .ok_or(AgentError::NotEnrolled)?;
        Ok((identity, ca_pem))
    }

    /// A client presenting this agent's certificate and trusting only its server's CA: how the
    /// agent reaches other agents' transfer endpoints.
    pub fn peer_client(&self) -> Result<reqwest::Client, AgentError> {
        let internal = |error: anyhow::Error| AgentError::Internal(error);
        let (identity, ca_pem) = self.peer_identity()?;
        let tls = drover_tls::client_config(&ca_pem, Some(&identity))
            .map_err(|error| internal(error.into()))?;
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|error| internal(error.into()))
    }

    /// Second step: store the signed certificate and the CA, forget the code, and require
    /// client certificates from that CA on every new connection.
    pub fn complete(&self, request: &EnrollComplete) -> Result<(), AgentError> {
        let mut phase = self.lock();
        Self::check_code(&phase, &request.code)?;
        let internal = |error: StoreError| AgentError::Internal(error.into());
        let key_pem = store::read_optional(&self.files.pending_key())
            .map_err(internal)?
            .ok_or(AgentError::EnrollmentNotBegun)?;
        let identity = Identity {
            cert_pem: request.cert_pem.clone(),
            key_pem,
        };
        let server_config = drover_tls::server_config(&identity, Some(&request.ca_pem))
            .map_err(AgentError::EnrollmentCertificateInvalid)?;
        store::write_atomic(
            &self.files.ca_cert(),
            request.ca_pem.as_bytes(),
            Access::Public,
        )
        .and_then(|()| {
            store::write_atomic(
                &self.files.agent_cert(),
                identity.cert_pem.as_bytes(),
                Access::Public,
            )
        })
        // The key goes last: its presence is what marks the agent as enrolled at start.
        .and_then(|()| {
            store::write_atomic(
                &self.files.agent_key(),
                identity.key_pem.as_bytes(),
                Access::Secret,
            )
        })
        .and_then(|()| store::remove_optional(&self.files.pending_key()))
        .and_then(|()| store::remove_optional(&self.files.code))
        .map_err(internal)?;
        self.tls.reload_from_config(Arc::new(server_config));
        *phase = Phase::Enrolled;
        tracing::info!("enrolled: client certificates from the server's CA now required");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_four_groups_of_unambiguous_characters() {
        let code = generate_code();
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        for group in groups {
            assert_eq!(group.len(), 4, "{code}");
            assert!(group.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
        }
        assert_ne!(generate_code(), code);
    }

    #[test]
    fn code_comparison_ignores_case_and_separators_only() {
        let cases = [
            ("ABCD-EFGH-JKLM-NPQR", "ABCD-EFGH-JKLM-NPQR", true),
            ("ABCD-EFGH-JKLM-NPQR", "abcd efgh jklm npqr", true),
            ("ABCD-EFGH-JKLM-NPQR", "ABCD-EFGH-JKLM-NPQS", false),
            ("ABCD-EFGH-JKLM-NPQR", "ABCD-EFGH-JKLM", false),
            ("ABCD-EFGH-JKLM-NPQR", "", false),
        ];
        for (expected, offered, matches) in cases {
            assert_eq!(codes_match(expected, offered), matches, "{offered}");
        }
    }

    #[test]
    fn enrollment_round_trip_and_restart() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let enrollment =
            Enrollment::open(data_dir.path(), Some("AAAA-BBBB-CCCC-DDDD".into())).expect("open");
        assert_eq!(
            enrollment.pending_code().as_deref(),
            Some("AAAA-BBBB-CCCC-DDDD")
        );
        assert!(matches!(
            enrollment.begin("WRONG"),
            Err(AgentError::EnrollmentCodeInvalid)
        ));
        let complete_without_begin = EnrollComplete {
            code: "AAAA-BBBB-CCCC-DDDD".into(),
            ca_pem: String::new(),
            cert_pem: String::new(),
        };
        assert!(matches!(
            enrollment.complete(&complete_without_begin),
            Err(AgentError::EnrollmentNotBegun)
        ));

        let ca = drover_tls::CertificateAuthority::generate("test CA").expect("CA");
        let csr = enrollment.begin("aaaa bbbb cccc dddd").expect("begin");
        let bad = EnrollComplete {
            code: "AAAA-BBBB-CCCC-DDDD".into(),
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: "not a certificate".into(),
        };
        assert!(matches!(
            enrollment.complete(&bad),
            Err(AgentError::EnrollmentCertificateInvalid(_))
        ));
        let cert_pem = ca
            .sign_request(&csr.csr_pem, &csr.hostname, &["127.0.0.1".into()])
            .expect("sign");
        enrollment
            .complete(&EnrollComplete {
                code: "AAAA-BBBB-CCCC-DDDD".into(),
                ca_pem: ca.cert_pem().to_owned(),
                cert_pem,
            })
            .expect("complete");
        assert!(enrollment.is_enrolled());
        assert_eq!(enrollment.pending_code(), None);
        assert!(!data_dir.path().join("enrollment-code").exists());
        assert!(matches!(
            enrollment.begin("AAAA-BBBB-CCCC-DDDD"),
            Err(AgentError::AlreadyEnrolled)
        ));

        let restarted =
            Enrollment::open(data_dir.path(), Some("EEEE-FFFF-GGGG-HHHH".into())).expect("reopen");
        assert!(restarted.is_enrolled(), "an enrolled agent stays enrolled");
    }

    #[test]
    fn stored_code_survives_a_restart() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let first = Enrollment::open(data_dir.path(), None).expect("open");
        let code = first.pending_code().expect("a code");
        let second = Enrollment::open(data_dir.path(), None).expect("reopen");
        assert_eq!(second.pending_code(), Some(code));
    }
}
