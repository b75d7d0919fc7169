use super::*;

fn names() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

#[test]
fn ca_round_trips_through_pem_and_signs_requests() {
    let ca = CertificateAuthority::generate("Drover test CA").expect("generate CA");
    let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).expect("load CA");
    let (csr_pem, key_pem) = certificate_request("agent").expect("csr");
    let cert_pem = loaded
        .sign_request(&csr_pem, "host-1", &names())
        .expect("sign csr");
    let identity = Identity { cert_pem, key_pem };
    // A chain the CA issued makes valid server and client configurations.
    server_config(&identity, Some(ca.cert_pem())).expect("mTLS server config");
    client_config(ca.cert_pem(), Some(&identity)).expect("mTLS client config");
    assert_eq!(certificates(&identity.cert_pem).expect("chain").len(), 2);
}

#[test]
fn rejects_garbage_pem() {
    assert!(certificates("not a certificate").is_err());
    assert!(private_key("no key here").is_err());
    assert!(CertificateAuthority::from_pem("x", "y").is_err());
}

#[test]
fn fingerprints_are_sha256_hex() {
    let ca = CertificateAuthority::generate("fp").expect("generate CA");
    let fp = pem_fingerprint(ca.cert_pem()).expect("fingerprint");
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp.split(':').all(|byte| byte.len() == 2));
    let other = CertificateAuthority::generate("fp").expect("generate CA");
    assert_ne!(fp, pem_fingerprint(other.cert_pem()).expect("fingerprint"));
}
