//! Calls to one agent's control port over mutual TLS, and the enrollment that makes that possible.

mod checkpoints;
mod migration;

use crate::pki::Pki;
use drover_api::agent::{
    AgentHostInfo, AgentNetwork, AgentNetworkStatus, AgentNic, AgentVmSpec, EnrollBegin,
    EnrollComplete, EnrollCsr, NicLease, VmRuntime,
};
use drover_api::library::{AgentImport, AgentPackage, AgentShare, LibraryFile};
use drover_api::network::PortProtocol;
use drover_api::transfer::{
    AgentVmFile, AgentVmFilesFetch, AgentVmFilesFetched, TransferProgress, VmFilesPlace,
};
use drover_api::{ErrorBody, ErrorDetail, NetworkId, PortForward, VmAction, VmActionRequest, VmId};
use drover_tls::{CertificateAuthority, TlsError};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long a control call may take. Creating a disk or booting a guest under TCG takes seconds;
/// this bounds a hung agent, not a slow one.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An import downloads, converts and hashes images of many GiB.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the agent at {address}")]
    Unreachable {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the agent at {address} refused: {detail}")]
    Refused {
        address: String,
        status: u16,
        detail: ErrorDetail,
    },
    #[error("the agent at {address} answered {status} with an unexpected body")]
    BadAnswer { address: String, status: u16 },
    #[error("cannot open the console stream of the agent at {address}")]
    Console {
        address: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("cannot set up TLS to agents")]
    Tls(#[from] TlsError),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl AgentError {
    /// Whether this is a copy between agents cut short (the receiver gone, or its transfer from
    /// the sender broken), which a retry resumes.
    pub fn is_cut_transfer(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } => true,
            AgentError::Refused { detail, .. } => detail.code == "transfer_failed",
            _ => false,
        }
    }
}

impl From<AgentError> for crate::http::ApiError {
    fn from(error: AgentError) -> Self {
        use crate::http::ApiError;
        match error {
            AgentError::Refused { status, detail, .. } if (400..500).contains(&status) => {
                ApiError::Agent { status, detail }
            }
            AgentError::Refused { detail, .. } => ApiError::Agent {
                status: 502,
                detail: ErrorDetail::new(
                    "agent_error",
                    format!("the agent failed: {}", detail.message),
                    detail.action,
                ),
            },
            AgentError::Unreachable { address, .. } | AgentError::Console { address, .. } => {
                ApiError::HostUnreachable { address }
            }
            other => ApiError::internal(other),
        }
    }
}

/// What the server needs to call any enrolled agent: one HTTP client presenting the server's
/// client certificate and trusting only the built-in CA.
#[derive(Debug, Clone)]
pub struct Agents {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
}

/// A WebSocket to an agent's console endpoint.
pub type ConsoleStream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

impl Agents {
    pub fn new(pki: &Pki) -> Result<Agents, AgentError> {
        let tls = drover_tls::client_config(pki.ca.cert_pem(), Some(&pki.client))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(AgentError::Client)?;
        Ok(Agents {
            http,
            tls: Arc::new(tls),
        })
    }

    pub fn at<'a>(&'a self, address: &'a str) -> AgentClient<'a> {
        AgentClient {
            http: &self.http,
            address,
        }
    }

    /// Opens the agent's relay of a VM's serial console.
    pub async fn console(&self, address: &str, vm_id: VmId) -> Result<ConsoleStream, AgentError> {
        let url = format!("wss://{address}/v1/vms/{vm_id}/console");
        let (stream, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            true,
            Some(Connector::Rustls(self.tls.clone())),
        )
        .await
        .map_err(|source| AgentError::Console {
            address: address.to_owned(),
            source: Box::new(source),
        })?;
        Ok(stream)
    }
}

/// The control endpoints of the agent at `address`.
#[derive(Debug, Clone, Copy)]
pub struct AgentClient<'a> {
    http: &'a reqwest::Client,
    address: &'a str,
}

impl AgentClient<'_> {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AgentError> {
        self.send_within(request, CALL_TIMEOUT).await
    }

    async fn send_within(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, AgentError> {
        let response =
            request
                .timeout(timeout)
                .send()
                .await
                .map_err(|source| AgentError::Unreachable {
                    address: self.address.to_owned(),
                    source,
                })?;
        checked(self.address, response).await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, AgentError> {
        self.json_within(request, CALL_TIMEOUT).await
    }

    async fn json_within<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let response = self.send_within(request, timeout).await?;
        let status = response.status().as_u16();
        response.json().await.map_err(|_| AgentError::BadAnswer {
            address: self.address.to_owned(),
            status,
        })
    }

    pub async fn host_info(&self) -> Result<AgentHostInfo, AgentError> {
        self.json(self.http.get(self.url("/v1/host"))).await
    }

    /// Asks whether the agent could define `spec`, changing nothing.
    pub async fn validate(&self, spec: &AgentVmSpec) -> Result<(), AgentError> {
        self.send(self.http.post(self.url("/v1/vms/validate")).json(spec))
            .await
            .map(drop)
    }

    /// Defines the VM and makes its disk (idempotent). A library disk's base may be fetched to
    /// the host first, which takes as long as its size does.
    pub async fn define(&self, spec: &AgentVmSpec) -> Result<VmRuntime, AgentError> {
        self.json_within(
            self.http
                .put(self.url(&format!("/v1/vms/{}", spec.id)))
                .json(spec),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// Runs a power action; answers once it is done.
    pub async fn action(&self, vm_id: VmId, action: VmAction) -> Result<VmRuntime, AgentError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/actions")))
                .json(&VmActionRequest { action }),
        )
        .await
    }

    /// Forwards a host port to the VM (idempotent).
    pub async fn add_port_forward(
        &self,
        vm_id: VmId,
        forward: PortForward,
    ) -> Result<(), AgentError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/port-forwards")))
                .json(&forward),
        )
        .await
        .map(drop)
    }

    /// Stops forwarding a host port to the VM (idempotent).
    pub async fn remove_port_forward(
        &self,
        vm_id: VmId,
        protocol: PortProtocol,
        host_port: u16,
    ) -> Result<(), AgentError> {
        self.send(self.http.delete(self.url(&format!(
            "/v1/vms/{vm_id}/port-forwards/{protocol}/{host_port}"
        ))))
        .await
        .map(drop)
    }

    /// Adds a NIC to the VM, hot-plugged when it runs (idempotent).
    pub async fn add_nic(&self, vm_id: VmId, nic: &AgentNic) -> Result<(), AgentError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/nics")))
                .json(nic),
        )
        .await
        .map(drop)
    }

    /// Changes the medium in the VM's CD-ROM drive, at once when it runs (idempotent).
    pub async fn change_cdrom(
        &self,
        vm_id: VmId,
        cdrom: &drover_api::cdrom::VmCdrom,
    ) -> Result<(), AgentError> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/vms/{vm_id}/cdrom")))
                .json(cdrom),
        )
        .await
        .map(drop)
    }

    /// Removes a NIC from the VM, hot-unplugged when it runs (idempotent).
    pub async fn remove_nic(&self, vm_id: VmId, nic: &str) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/vms/{vm_id}/nics/{nic}"))),
        )
        .await
        .map(drop)
    }

    /// The addresses a VM's NICs hold, from the host's DHCP leases.
    pub async fn leases(&self, vm_id: VmId) -> Result<Vec<NicLease>, AgentError> {
        self.json(self.http.get(self.url(&format!("/v1/vms/{vm_id}/leases"))))
            .await
    }

    /// Realizes a network on the host (idempotent).
    pub async fn put_network(
        &self,
        network: &AgentNetwork,
    ) -> Result<AgentNetworkStatus, AgentError> {
        self.json(
            self.http
                .put(self.url(&format!("/v1/networks/{}", network.id)))
                .json(network),
        )
        .await
    }

    /// Removes a network from the host (idempotent).
    pub async fn delete_network(&self, network_id: NetworkId) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/networks/{network_id}"))),
        )
        .await
        .map(drop)
    }

    /// Ends the VM's process and removes its files (idempotent).
    pub async fn delete(&self, vm_id: VmId) -> Result<(), AgentError> {
        self.send(self.http.delete(self.url(&format!("/v1/vms/{vm_id}"))))
            .await
            .map(drop)
    }

    /// Serves `path` as library share `name` (idempotent).
    pub async fn add_share(&self, name: &str, path: &str) -> Result<(), AgentError> {
        self.send(
            self.http
                .put(self.url(&format!("/v1/library/shares/{name}")))
                .json(&AgentShare {
                    path: path.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    /// Indexes every image and ISO in share `name`.
    pub async fn share_files(&self, name: &str) -> Result<Vec<LibraryFile>, AgentError> {
        // Fingerprinting a share's files reads every byte of them.
        self.json_within(
            self.http
                .get(self.url(&format!("/v1/library/shares/{name}/files"))),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// Imports a file or URL into share `name`; answers once converted, checked and fingerprinted.
    pub async fn import(
        &self,
        share: &str,
        request: &AgentImport,
    ) -> Result<LibraryFile, AgentError> {
        self.json_within(
            self.http
                .post(self.url(&format!("/v1/library/shares/{share}/import")))
                .json(request),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// Imports a package (OVA, OVF, VMX) or a lone disk into share `name`: its disks as files,
    /// boot disk first, and the hardware it describes.
    pub async fn import_package(
        &self,
        share: &str,
        request: &AgentImport,
    ) -> Result<AgentPackage, AgentError> {
        self.json_within(
            self.http
                .post(self.url(&format!("/v1/library/shares/{share}/packages")))
                .json(request),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// Removes a file from share `name` (idempotent).
    pub async fn remove_file(&self, share: &str, path: &str) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/library/shares/{share}/files/{path}"))),
        )
        .await
        .map(drop)
    }

    /// Opens the NDJSON event stream (no overall timeout: it lives as long as the connection).
    pub async fn events(&self) -> Result<reqwest::Response, AgentError> {
        let response = self
            .http
            .get(self.url("/v1/events"))
            .send()
            .await
            .map_err(|source| AgentError::Unreachable {
                address: self.address.to_owned(),
                source,
            })?;
        checked(self.address, response).await
    }
}

/// Moving a VM's files between agents (`drover_api::transfer`): quick migration, store, deploy.
impl AgentClient<'_> {
    fn vm_files_url(&self, vm_id: VmId, place: &VmFilesPlace) -> String {
        match &place.share {
            Some(share) => self.url(&format!("/v1/vms/{vm_id}/files?share={share}")),
            None => self.url(&format!("/v1/vms/{vm_id}/files")),
        }
    }

    /// The VM's files in `place` on this agent, fingerprinted (refused while QEMU runs).
    pub async fn vm_files(
        &self,
        vm_id: VmId,
        place: &VmFilesPlace,
    ) -> Result<Vec<AgentVmFile>, AgentError> {
        // Fingerprinting reads every byte of the disks.
        self.json_within(
            self.http.get(self.vm_files_url(vm_id, place)),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// Makes this agent fetch the VM's files from another; answers once all are verified here.
    pub async fn fetch_vm_files(
        &self,
        vm_id: VmId,
        request: &AgentVmFilesFetch,
    ) -> Result<AgentVmFilesFetched, AgentError> {
        self.json_within(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/files/fetch")))
                .json(request),
            IMPORT_TIMEOUT,
        )
        .await
    }

    /// How far the fetch named `id` has come.
    pub async fn transfer_progress(&self, id: &str) -> Result<TransferProgress, AgentError> {
        self.json(self.http.get(self.url(&format!("/v1/transfers/{id}"))))
            .await
    }

    /// Removes the VM's stored copy from share `share` (idempotent).
    pub async fn remove_stored_vm_files(&self, vm_id: VmId, share: &str) -> Result<(), AgentError> {
        let place = VmFilesPlace {
            share: Some(share.to_owned()),
        };
        self.send(self.http.delete(self.vm_files_url(vm_id, &place)))
            .await
            .map(drop)
    }
}

/// Turns an agent's error answer into [`AgentError::Refused`].
async fn checked(
    address: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, AgentError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let status = status.as_u16();
    match response.json::<ErrorBody>().await {
        Ok(body) => Err(AgentError::Refused {
            address: address.to_owned(),
            status,
            detail: body.error,
        }),
        Err(_) => Err(AgentError::BadAnswer {
            address: address.to_owned(),
            status,
        }),
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed), for certificate names.
pub fn address_host(address: &str) -> Result<&str, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_owned())?;
    port.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("'{port}' is not a port number"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    let plain_name = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if host.is_empty() || !(plain_name || host.parse::<std::net::IpAddr>().is_ok()) {
        return Err(format!("'{host}' is not a host name or IP address"));
    }
    Ok(host)
}

/// Enrolls the agent at `address` with its one-time `code`: the agent sends a certificate request,
/// the CA signs it for the address's host and the agent's own hostname, the agent installs it.
/// Returns the agent's hostname. The code, not the TLS certificate (still self-signed), is what
/// authenticates the agent here, hence the first-use TLS configuration.
pub async fn enroll(
    address: &str,
    code: &str,
    ca: &CertificateAuthority,
) -> Result<String, AgentError> {
    let (tls, _presented) = drover_tls::first_use_client_config()?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(AgentError::Client)?;
    let agent = AgentClient {
        http: &http,
        address,
    };
    let csr: EnrollCsr = agent
        .json(http.post(agent.url("/v1/enroll")).json(&EnrollBegin {
            code: code.to_owned(),
        }))
        .await?;
    let host = address_host(address).map_err(|_| AgentError::BadAnswer {
        address: address.to_owned(),
        status: 0,
    })?;
    let mut names = vec![host.to_owned()];
    if csr.hostname != host && !csr.hostname.is_empty() {
        names.push(csr.hostname.clone());
    }
    let cert_pem = ca.sign_request(&csr.csr_pem, &csr.hostname, &names)?;
    agent
        .send(
            http.post(agent.url("/v1/enroll/complete"))
                .json(&EnrollComplete {
                    code: code.to_owned(),
                    ca_pem: ca.cert_pem().to_owned(),
                    cert_pem,
                }),
        )
        .await?;
    Ok(csr.hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let good = [
            ("127.0.0.1:8101", "127.0.0.1"),
            ("kvm1.example.com:8101", "kvm1.example.com"),
            ("[::1]:8101", "::1"),
        ];
        for (address, host) in good {
            assert_eq!(address_host(address), Ok(host), "{address}");
        }
        for bad in [
            "kvm1",
            "kvm1:",
            ":8101",
            "kvm1:0",
            "kvm1:99999",
            "a b:1",
            "x/y:1",
        ] {
            assert!(address_host(bad).is_err(), "{bad}");
        }
    }
}
