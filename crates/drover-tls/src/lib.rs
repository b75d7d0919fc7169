//! Drover's public key infrastructure: the server's built-in certificate authority, the
//! certificates it issues to the API endpoint, to itself as a client of agents and to agents
//! (from a certificate signing request, so an agent's key never leaves its host), and the rustls
//! configurations for mutual TLS and for trust on first use. Everything uses the `ring` provider.
//! This crate holds no files and opens no sockets.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// How long a host or endpoint certificate is valid.
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// How long the built-in CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate or key")]
    Generate(#[from] rcgen::Error),
    #[error("no valid {what} in PEM text")]
    Pem { what: &'static str },
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first, then the CA) and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The server's certificate authority.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that differ between machines.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn leaf_params(common_name: &str, names: &[String]) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Agents are servers (to the server) and clients (to other agents); one certificate does both.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, LEAF_VALIDITY_DAYS);
    Ok(params)
}

impl CertificateAuthority {
    /// Makes a new CA with a fresh key.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Drover");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved with [`Self::cert_pem`] and [`Self::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate and a fresh key for `names` (DNS names or IP addresses).
    pub fn issue(&self, common_name: &str, names: &[String]) -> Result<Identity, TlsError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(common_name, names)?.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's certificate request. The names in the request are ignored: the server
    /// decides which names the certificate holds (the address it reached the agent at).
    pub fn sign_request(
        &self,
        csr_pem: &str,
        common_name: &str,
        names: &[String],
    ) -> Result<String, TlsError> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem)?;
        request.params = leaf_params(common_name, names)?;
        let cert = request.signed_by(&self.issuer)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// A new key and a certificate signing request for it, both PEM: `(csr_pem, key_pem)`.
pub fn certificate_request(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr_pem = params.serialize_request(&key)?.pem()?;
    Ok((csr_pem, key.serialize_pem()))
}

/// A self-signed identity, for an agent that has not enrolled yet.
pub fn self_signed(common_name: &str, names: &[String]) -> Result<Identity, TlsError> {
    let key = KeyPair::generate()?;
    let cert = leaf_params(common_name, names)?.self_signed(&key)?;
    Ok(Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem {
            what: "certificate",
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
        });
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::Pem {
        what: "private key",
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

/// A server configuration presenting `identity`. With `client_ca_pem`, every client must show a
/// certificate issued by that CA (mutual TLS); without it, no client certificate is asked for.
pub fn server_config(
    identity: &Identity,
    client_ca_pem: Option<&str>,
) -> Result<ServerConfig, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca_pem) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(
        certificates(&identity.cert_pem)?,
        private_key(&identity.key_pem)?,
    )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts only `ca_pem` and, for mutual TLS, presents `identity`.
pub fn client_config(ca_pem: &str, identity: Option<&Identity>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some(identity) => builder.with_client_auth_cert(
            certificates(&identity.cert_pem)?,
            private_key(&identity.key_pem)?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// SHA-256 of a certificate's DER bytes, as colon-separated upper-case hex (the form browsers
/// and `openssl x509 -fingerprint -sha256` show).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the first certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Result<String, TlsError> {
    Ok(fingerprint(certificates(pem)?[0].as_ref()))
}

/// The certificates a server presented during a [`first_use_client_config`] handshake, as PEM.
#[derive(Debug, Default)]
pub struct PresentedChain {
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl PresentedChain {
    /// The whole chain as PEM, leaf first.
    pub fn chain_pem(&self) -> Vec<String> {
        let chain = self
            .chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        chain
            .iter()
            .map(|cert| pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())))
            .collect()
    }
}

/// Accepts any server certificate but checks the handshake signatures and records the chain,
/// so that the caller can show its fingerprint and ask the user (trust on first use), or can
/// authenticate the peer by other means (an agent's one-time enrollment code).
#[derive(Debug)]
struct RecordingVerifier {
    presented: Arc<PresentedChain>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = self
            .presented
            .chain
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        chain.clear();
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|cert| cert.clone().into_owned()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts whatever the server presents and records it. Use only
/// to fetch a certificate for the user to confirm, or where another secret authenticates.
pub fn first_use_client_config() -> Result<(ClientConfig, Arc<PresentedChain>), TlsError> {
    let presented = Arc::new(PresentedChain::default());
    let verifier = RecordingVerifier {
        presented: presented.clone(),
        provider: provider(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, presented))
}

#[cfg(test)]
mod tests;
