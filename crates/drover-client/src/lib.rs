//! Typed async client of Drover's REST API (`/api/v1`), its event stream and the VM consoles,
//! over HTTPS that trusts only the server's own CA. Used by the CLI, `drover up` and the tests.
//! It holds no state beyond the connection settings: where credentials are stored is the CLI's
//! business.

mod checkpoints;
mod error;

pub use error::ClientError;
pub use tokio_tungstenite::tungstenite::Message;

use drover_api::auth::{LoginRequest, LoginResponse};
use drover_api::hostgroup::{HostMaintenance, HostMove};
use drover_api::library::{
    LibraryImport, LibraryItem, LibraryRefresh, LibraryServer, LibraryShare, LibraryShareAdd,
};
use drover_api::network::PortProtocol;
use drover_api::page::{MAX_PAGE_SIZE, PageRequest};
use drover_api::template::{
    GuestOsProfile, GuestOsProfileCreate, HardwareProfile, HardwareProfileCreate, Template,
    TemplateCreate, VmFromTemplate,
};
use drover_api::{
    ErrorBody, Event, Host, HostAdd, HostGroup, HostGroupCreate, HostGroupUpdate, Job, JobId,
    JobStatus, Network, NetworkCreate, NicAdd, Page, PlacementRating, PlacementRequest,
    PortForward, Vm, VmAction, VmActionRequest, VmCreate, VmState,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A VM's serial console: binary frames both ways, the guest's serial bytes.
pub type ConsoleStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often [`Client::wait_for_job`] asks for the job.
pub const JOB_POLL_INTERVAL: Duration = Duration::from_millis(200);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Server-side filters of `GET /api/v1/vms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmFilter {
    /// Host id or name.
    pub host: Option<String>,
    pub state: Option<VmState>,
}

/// The CA certificate a server presented, for the user to confirm (trust on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCa {
    pub ca_pem: String,
    /// SHA-256 of the CA certificate, colon-separated upper-case hex.
    pub fingerprint: String,
}

/// A connection to one Drover server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    base: Url,
    token: Option<String>,
}

/// `https://host:port` from what a user typed (`host:port` is accepted too).
pub fn parse_server_url(url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let text = if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    };
    let mut parsed = Url::parse(&text).map_err(|error| invalid(&error.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(invalid("Drover serves its API over https only"));
    }
    if parsed.host_str().is_none() {
        return Err(invalid("no host name"));
    }
    parsed.set_path("");
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(ClientError::Build)
}

/// Connects to `url` trusting any certificate, only to learn which CA the server presents (the
/// last certificate of its chain). Nothing secret is sent on this connection.
pub async fn fetch_server_ca(url: &str) -> Result<PresentedCa, ClientError> {
    let base = parse_server_url(url)?;
    let (tls, presented) = drover_tls::first_use_client_config()?;
    let http = http_client(tls)?;
    let probe = api_url(&base, &[]);
    // Whatever the server answers, the handshake has recorded its chain.
    http.get(probe.clone())
        .send()
        .await
        .map_err(|source| ClientError::Unreachable {
            url: probe.to_string(),
            source,
        })?;
    let ca_pem = presented
        .chain_pem()
        .pop()
        .ok_or_else(|| ClientError::NoCertificate {
            url: base.to_string(),
        })?
        // The PEM encoder writes CRLF; files and comparisons are simpler with LF.
        .replace("\r\n", "\n");
    let fingerprint = drover_tls::pem_fingerprint(&ca_pem)?;
    Ok(PresentedCa {
        ca_pem,
        fingerprint,
    })
}

fn api_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an https URL always has a path")
        .clear()
        .extend(drover_api::API_PREFIX.trim_start_matches('/').split('/'))
        .extend(segments);
    url
}

/// Turns an error answer into [`ClientError::Api`] when it has the documented body.
fn error_from_body(url: &Url, status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => ClientError::Api {
            status,
            detail: body.error,
        },
        Err(_) => ClientError::Unexpected {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

impl Client {
    /// A client of the server at `url` that trusts only `ca_pem` and sends `token` if given.
    pub fn new(url: &str, token: Option<String>, ca_pem: &str) -> Result<Self, ClientError> {
        let base = parse_server_url(url)?;
        let tls = drover_tls::client_config(ca_pem, None)?;
        Ok(Self {
            http: http_client(tls.clone())?,
            tls: Arc::new(tls),
            base,
            token,
        })
    }

    /// The same server with another token (after [`Client::login`]).
    pub fn with_token(&self, token: String) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The server's base URL, `https://host:port/`.
    pub fn url(&self) -> &Url {
        &self.base
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, api_url(&self.base, segments));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let (url, status, body) = self.exchange(request).await?;
        serde_json::from_slice(&body).map_err(|_| ClientError::Unexpected {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// For calls that answer 204 with no body.
    async fn send_no_content(&self, request: RequestBuilder) -> Result<(), ClientError> {
        self.exchange(request).await.map(|_| ())
    }

    /// Sends a request; the URL, status and body of a successful answer, or the API's error.
    async fn exchange(&self, request: RequestBuilder) -> Result<(Url, u16, Vec<u8>), ClientError> {
        let request = request.build().map_err(ClientError::Build)?;
        let url = request.url().clone();
        let response =
            self.http
                .execute(request)
                .await
                .map_err(|source| ClientError::Unreachable {
                    url: url.to_string(),
                    source,
                })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::Decode {
                url: url.to_string(),
                source,
            })?;
        if !status.is_success() {
            return Err(error_from_body(&url, status.as_u16(), &body));
        }
        Ok((url, status.as_u16(), body.to_vec()))
    }

    /// Follows `next_cursor` until the last page.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Vec<T>, ClientError> {
        let mut items = Vec::new();
        let mut page_request = PageRequest {
            limit: Some(MAX_PAGE_SIZE),
            cursor: None,
        };
        loop {
            let request = self
                .request(Method::GET, segments)
                .query(query)
                .query(&page_request);
            let page: Page<T> = self.send(request).await?;
            items.extend(page.items);
            // A cursor that does not move would loop forever; the list ends there.
            if page.next_cursor.is_none() || page.next_cursor == page_request.cursor {
                return Ok(items);
            }
            page_request.cursor = page.next_cursor;
        }
    }

    /// `POST /auth/login`: a new bearer token. Use [`Client::with_token`] to send it.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<LoginResponse, ClientError> {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
            ttl_seconds,
        };
        self.send(self.request(Method::POST, &["auth", "login"]).json(&body))
            .await
    }

    /// One page of `GET /hosts`.
    pub async fn list_hosts(&self, page: &PageRequest) -> Result<Page<Host>, ClientError> {
        self.send(self.request(Method::GET, &["hosts"]).query(page))
            .await
    }

    /// Every host, all pages.
    pub async fn all_hosts(&self) -> Result<Vec<Host>, ClientError> {
        self.all_pages(&["hosts"], &[]).await
    }

    /// A host by id or name.
    pub async fn host(&self, host: &str) -> Result<Host, ClientError> {
        self.send(self.request(Method::GET, &["hosts", host])).await
    }

    /// Starts enrolling the agent at `add.address`; the job `host.add` does the work.
    pub async fn add_host(&self, add: &HostAdd) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["hosts"]).json(add))
            .await
    }

    pub async fn remove_host(&self, host: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["hosts", host]))
            .await
    }

    /// Moves a host to another group; the job `host.move` does it.
    pub async fn move_host(&self, host: &str, group: &str) -> Result<Job, ClientError> {
        let body = HostMove {
            group: group.to_owned(),
        };
        self.send(
            self.request(Method::POST, &["hosts", host, "move"])
                .json(&body),
        )
        .await
    }

    /// Puts a host in maintenance mode (`enabled`) or returns it to service; a job.
    pub async fn host_maintenance(&self, host: &str, enabled: bool) -> Result<Job, ClientError> {
        let body = HostMaintenance { enabled };
        self.send(
            self.request(Method::POST, &["hosts", host, "maintenance"])
                .json(&body),
        )
        .await
    }

    /// Every host group, in tree order.
    pub async fn host_groups(&self) -> Result<Vec<HostGroup>, ClientError> {
        self.all_pages(&["hostgroups"], &[]).await
    }

    /// A host group by id or name.
    pub async fn host_group(&self, group: &str) -> Result<HostGroup, ClientError> {
        self.send(self.request(Method::GET, &["hostgroups", group]))
            .await
    }

    pub async fn create_host_group(
        &self,
        create: &HostGroupCreate,
    ) -> Result<HostGroup, ClientError> {
        self.send(self.request(Method::POST, &["hostgroups"]).json(create))
            .await
    }

    /// Changes a group's parent or settings; all of it or nothing.
    pub async fn update_host_group(
        &self,
        group: &str,
        update: &HostGroupUpdate,
    ) -> Result<HostGroup, ClientError> {
        self.send(
            self.request(Method::PATCH, &["hostgroups", group])
                .json(update),
        )
        .await
    }

    /// Hosts whose agent has the library role.
    pub async fn library_servers(&self) -> Result<Vec<LibraryServer>, ClientError> {
        self.all_pages(&["library", "servers"], &[]).await
    }

    pub async fn library_shares(&self) -> Result<Vec<LibraryShare>, ClientError> {
        self.all_pages(&["library", "shares"], &[]).await
    }

    /// Starts the `library.share_add` job.
    pub async fn add_library_share(&self, add: &LibraryShareAdd) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["library", "shares"]).json(add))
            .await
    }

    /// Every library item, or those of one share.
    pub async fn library_items(
        &self,
        share: Option<&str>,
    ) -> Result<Vec<LibraryItem>, ClientError> {
        let query: Vec<(&str, String)> = share
            .map(|share| ("share", share.to_owned()))
            .into_iter()
            .collect();
        self.all_pages(&["library", "items"], &query).await
    }

    /// A library item by id or name.
    pub async fn library_item(&self, item: &str) -> Result<LibraryItem, ClientError> {
        self.send(self.request(Method::GET, &["library", "items", item]))
            .await
    }

    /// Starts the `library.import` job.
    pub async fn import_library_item(&self, import: &LibraryImport) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["library", "items"])
                .json(import),
        )
        .await
    }

    /// Deletes an empty group.
    pub async fn delete_host_group(&self, group: &str) -> Result<(), ClientError> {
        self.send_no_content(self.request(Method::DELETE, &["hostgroups", group]))
            .await
    }

    /// Rates every host of a group for a VM, best first, with reasons.
    pub async fn rate_placement(
        &self,
        request: &PlacementRequest,
    ) -> Result<PlacementRating, ClientError> {
        self.send(
            self.request(Method::POST, &["placement", "rate"])
                .json(request),
        )
        .await
    }

    /// Starts the `library.remove` job.
    pub async fn remove_library_item(&self, item: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["library", "items", item]))
            .await
    }

    /// Starts the `library.refresh` job.
    pub async fn refresh_library(&self, refresh: &LibraryRefresh) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["library", "refresh"])
                .json(refresh),
        )
        .await
    }

    pub async fn hardware_profiles(&self) -> Result<Vec<HardwareProfile>, ClientError> {
        self.all_pages(&["profiles", "hardware"], &[]).await
    }

    pub async fn hardware_profile(&self, profile: &str) -> Result<HardwareProfile, ClientError> {
        self.send(self.request(Method::GET, &["profiles", "hardware", profile]))
            .await
    }

    /// Starts the `profile.hardware_create` job.
    pub async fn create_hardware_profile(
        &self,
        create: &HardwareProfileCreate,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["profiles", "hardware"])
                .json(create),
        )
        .await
    }

    pub async fn guest_os_profiles(&self) -> Result<Vec<GuestOsProfile>, ClientError> {
        self.all_pages(&["profiles", "guest-os"], &[]).await
    }

    pub async fn guest_os_profile(&self, profile: &str) -> Result<GuestOsProfile, ClientError> {
        self.send(self.request(Method::GET, &["profiles", "guest-os", profile]))
            .await
    }

    /// Starts the `profile.guest_os_create` job.
    pub async fn create_guest_os_profile(
        &self,
        create: &GuestOsProfileCreate,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["profiles", "guest-os"])
                .json(create),
        )
        .await
    }

    pub async fn templates(&self) -> Result<Vec<Template>, ClientError> {
        self.all_pages(&["templates"], &[]).await
    }

    pub async fn template(&self, template: &str) -> Result<Template, ClientError> {
        self.send(self.request(Method::GET, &["templates", template]))
            .await
    }

    /// Starts a `vm.create` job for a linked clone of the template's disk.
    pub async fn create_vm_from_template(
        &self,
        template: &str,
        request: &VmFromTemplate,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["templates", template, "vms"])
                .json(request),
        )
        .await
    }

    /// Starts the `template.create` job.
    pub async fn create_template(&self, create: &TemplateCreate) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["templates"]).json(create))
            .await
    }

    /// Starts the `template.delete` job.
    pub async fn delete_template(&self, template: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["templates", template]))
            .await
    }

    /// Starts the `profile.hardware_delete` job (refused while templates use the profile).
    pub async fn delete_hardware_profile(&self, profile: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["profiles", "hardware", profile]))
            .await
    }

    /// Starts the `profile.guest_os_delete` job (refused while templates use the profile).
    pub async fn delete_guest_os_profile(&self, profile: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["profiles", "guest-os", profile]))
            .await
    }

    /// Starts the `v2v.import` job: the package's disks into the library, then a stopped VM.
    pub async fn v2v_import(
        &self,
        import: &drover_api::v2v::V2vImport,
    ) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["v2v"]).json(import))
            .await
    }

    fn vm_query(filter: &VmFilter) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(host) = &filter.host {
            query.push(("host", host.clone()));
        }
        if let Some(state) = filter.state {
            query.push(("state", state.as_str().to_owned()));
        }
        query
    }

    /// One page of `GET /vms`, filtered on the server.
    pub async fn list_vms(
        &self,
        filter: &VmFilter,
        page: &PageRequest,
    ) -> Result<Page<Vm>, ClientError> {
        let request = self
            .request(Method::GET, &["vms"])
            .query(&Self::vm_query(filter))
            .query(page);
        self.send(request).await
    }

    /// Every VM that matches `filter`, all pages.
    pub async fn all_vms(&self, filter: &VmFilter) -> Result<Vec<Vm>, ClientError> {
        self.all_pages(&["vms"], &Self::vm_query(filter)).await
    }

    /// A VM by id or name.
    pub async fn vm(&self, vm: &str) -> Result<Vm, ClientError> {
        self.send(self.request(Method::GET, &["vms", vm])).await
    }

    /// Validates `create` at once (nothing is created when it fails), then answers the job
    /// `vm.create`.
    pub async fn create_vm(&self, create: &VmCreate) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["vms"]).json(create))
            .await
    }

    pub async fn vm_action(&self, vm: &str, action: VmAction) -> Result<Job, ClientError> {
        let body = VmActionRequest { action };
        self.send(
            self.request(Method::POST, &["vms", vm, "actions"])
                .json(&body),
        )
        .await
    }

    pub async fn delete_vm(&self, vm: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["vms", vm])).await
    }

    /// Moves a stopped VM's disks into a library share (job `vm.store`).
    pub async fn store_vm(
        &self,
        vm: &str,
        request: &drover_api::vm_store::VmStore,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["vms", vm, "store"])
                .json(request),
        )
        .await
    }

    /// Brings a stored VM back to a host, Stopped (job `vm.deploy`).
    pub async fn deploy_vm(
        &self,
        vm: &str,
        request: &drover_api::vm_store::VmDeploy,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["vms", vm, "deploy"])
                .json(request),
        )
        .await
    }

    /// Forwards `127.0.0.1:HOSTPORT` on the VM's host to the guest (job `vm.port_forward`).
    pub async fn add_port_forward(
        &self,
        vm: &str,
        forward: &PortForward,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["vms", vm, "port-forwards"])
                .json(forward),
        )
        .await
    }

    /// Stops forwarding `127.0.0.1:HOSTPORT` of `protocol` to the guest (job
    /// `vm.port_forward_remove`).
    pub async fn remove_port_forward(
        &self,
        vm: &str,
        protocol: PortProtocol,
        host_port: u16,
    ) -> Result<Job, ClientError> {
        let host_port = host_port.to_string();
        self.send(self.request(
            Method::DELETE,
            &["vms", vm, "port-forwards", protocol.as_str(), &host_port],
        ))
        .await
    }

    /// Adds a NIC on `network` to the VM, hot-plugged when it runs (job `vm.nic_add`).
    pub async fn add_nic(&self, vm: &str, network: &str) -> Result<Job, ClientError> {
        let body = NicAdd {
            network: network.to_owned(),
        };
        self.send(self.request(Method::POST, &["vms", vm, "nics"]).json(&body))
            .await
    }

    /// Removes the VM's NIC `nic` (`nic1`), hot-unplugged when it runs (job `vm.nic_remove`).
    pub async fn remove_nic(&self, vm: &str, nic: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["vms", vm, "nics", nic]))
            .await
    }

    /// Inserts a library ISO into the VM's CD-ROM drive, or ejects with no item (job
    /// `vm.cdrom`); at once when the VM runs.
    pub async fn change_cdrom(
        &self,
        vm: &str,
        change: &drover_api::cdrom::VmCdromChange,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["vms", vm, "cdrom"])
                .json(change),
        )
        .await
    }

    /// Moves the VM to another host, live when it runs (job `vm.migrate`).
    pub async fn migrate_vm(
        &self,
        vm: &str,
        request: &drover_api::migration::VmMigrate,
    ) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &["vms", vm, "migrate"])
                .json(request),
        )
        .await
    }

    /// Every network, all pages.
    pub async fn all_networks(&self) -> Result<Vec<Network>, ClientError> {
        self.all_pages(&["networks"], &[]).await
    }

    /// A network by id or name.
    pub async fn network(&self, network: &str) -> Result<Network, ClientError> {
        self.send(self.request(Method::GET, &["networks", network]))
            .await
    }

    /// Checks `create` at once, then answers the job `network.create`.
    pub async fn create_network(&self, create: &NetworkCreate) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &["networks"]).json(create))
            .await
    }

    pub async fn delete_network(&self, network: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["networks", network]))
            .await
    }

    /// One page of `GET /jobs`, newest first.
    pub async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        page: &PageRequest,
    ) -> Result<Page<Job>, ClientError> {
        let mut request = self.request(Method::GET, &["jobs"]).query(page);
        if let Some(status) = status {
            request = request.query(&[("status", status.as_str())]);
        }
        self.send(request).await
    }

    pub async fn job(&self, job: JobId) -> Result<Job, ClientError> {
        self.send(self.request(Method::GET, &["jobs", &job.to_string()]))
            .await
    }

    /// Cancels a queued job; the server refuses to cancel a running one.
    pub async fn cancel_job(&self, job: JobId) -> Result<Job, ClientError> {
        let request = self.request(Method::POST, &["jobs", &job.to_string(), "cancel"]);
        self.send(request).await
    }

    /// Runs a failed or canceled job again; answers the new job.
    pub async fn restart_job(&self, job: JobId) -> Result<Job, ClientError> {
        let request = self.request(Method::POST, &["jobs", &job.to_string(), "restart"]);
        self.send(request).await
    }

    /// Follows a job until it is finished, calling `on_change` with each version that differs
    /// from the last one seen; answers the finished job, whatever its status.
    pub async fn wait_for_job(
        &self,
        job: JobId,
        mut on_change: impl FnMut(&Job),
    ) -> Result<Job, ClientError> {
        let mut last_seen: Option<Job> = None;
        loop {
            let current = self.job(job).await?;
            if last_seen.as_ref() != Some(&current) {
                on_change(&current);
            }
            if current.status.is_finished() {
                return Ok(current);
            }
            last_seen = Some(current);
            tokio::time::sleep(JOB_POLL_INTERVAL).await;
        }
    }

    async fn websocket(&self, segments: &[&str]) -> Result<ConsoleStream, ClientError> {
        let mut url = api_url(&self.base, segments);
        url.set_scheme("wss")
            .expect("https and wss are both special schemes");
        let websocket_error = |source| ClientError::WebSocket {
            url: url.to_string(),
            source: Box::new(source),
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(websocket_error)?;
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Api {
                    status: 401,
                    detail: drover_api::ErrorDetail::new(
                        "unauthenticated",
                        "the stored token is not valid text",
                        "log in again with `drover login`",
                    ),
                }
            })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let connector = Connector::Rustls(self.tls.clone());
        match tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(connector),
        )
        .await
        {
            Ok((stream, _response)) => Ok(stream),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                Err(error_from_body(&url, response.status().as_u16(), &body))
            }
            Err(source) => Err(websocket_error(source)),
        }
    }

    /// `GET /events`: every change of a VM, host or job, as it happens.
    pub async fn events(
        &self,
    ) -> Result<BoxStream<'static, Result<Event, ClientError>>, ClientError> {
        let url = api_url(&self.base, &["events"]).to_string();
        let stream = self.websocket(&["events"]).await?;
        let events = stream
            .map_err(move |source| ClientError::WebSocket {
                url: url.clone(),
                source: Box::new(source),
            })
            .try_filter_map(|message| async move {
                match message {
                    Message::Text(text) => serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(ClientError::Event),
                    _ => Ok(None),
                }
            });
        Ok(events.boxed())
    }

    /// `GET /vms/{vm}/console`: the VM's serial console.
    pub async fn console(&self, vm: &str) -> Result<ConsoleStream, ClientError> {
        self.websocket(&["vms", vm, "console"]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let cases = [
            ("https://localhost:8100", Some("https://localhost:8100/")),
            ("localhost:8100", Some("https://localhost:8100/")),
            (
                "https://10.0.0.1:9100/some/path?x=1",
                Some("https://10.0.0.1:9100/"),
            ),
            ("http://localhost:8100", None),
            ("https://", None),
        ];
        for (input, expected) in cases {
            let parsed = parse_server_url(input).ok().map(|url| url.to_string());
            assert_eq!(parsed.as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn api_urls_escape_segments() {
        let base = parse_server_url("https://localhost:8100").expect("valid");
        assert_eq!(
            api_url(&base, &["vms", "a/b", "actions"]).as_str(),
            "https://localhost:8100/api/v1/vms/a%2Fb/actions"
        );
    }

    #[test]
    fn error_bodies() {
        let url = parse_server_url("https://localhost:8100").expect("valid");
        let body = br#"{"error":{"code":"vm_not_found","message":"no VM x","action":"list VMs"}}"#;
        match error_from_body(&url, 404, body) {
            ClientError::Api { status, detail } => {
                assert_eq!(status, 404);
                assert_eq!(detail.code, "vm_not_found");
                assert_eq!(detail.action, "list VMs");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        let unexpected = error_from_body(&url, 502, b"<html>bad gateway</html>");
        assert_eq!(unexpected.code(), "unexpected_response");
    }
}
