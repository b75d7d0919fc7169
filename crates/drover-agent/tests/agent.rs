//! The agent as the server sees it: real HTTPS on 127.0.0.1, enrollment exactly as the server
//! does it, mutual TLS afterwards, and real QEMU (TCG) running the tiny test guest.

use drover_agent::{AgentHandle, AgentOptions};
use drover_api::agent::{
    AgentEvent, AgentHostInfo, AgentNic, AgentVmSpec, EnrollBegin, EnrollComplete, EnrollCsr,
    NicAttachment, VmRuntime,
};
use drover_api::checkpoint::{AgentCheckpoint, AgentCheckpointCreate, AgentCheckpointDone};
use drover_api::config::{Config, Source};
use drover_api::{ErrorBody, VmAction, VmActionRequest, VmDisk, VmId, VmState};
use drover_hv::qemu::{QemuConfig, QemuDriver};
use drover_tls::{CertificateAuthority, Identity};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Console =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A data directory whose QEMUs are killed and whose logs are kept when the test fails.
struct DataDir {
    dir: tempfile::TempDir,
    test: &'static str,
}

impl DataDir {
    fn new(test: &'static str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            test,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn vm_dir(&self, vm_id: VmId) -> PathBuf {
        self.path().join("vms").join(vm_id.to_string())
    }

    fn qemu_pid(&self, vm_id: VmId) -> i32 {
        std::fs::read_to_string(self.vm_dir(vm_id).join("qemu.pid"))
            .expect("qemu.pid")
            .trim()
            .parse()
            .expect("a pid")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.path().join("vms")) else {
            return;
        };
        let artifacts = std::thread::panicking().then(|| drover_testkit::artifacts_dir(self.test));
        for vm in vms.filter_map(Result::ok) {
            let pid = std::fs::read_to_string(vm.path().join("qemu.pid"))
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(artifacts) = &artifacts {
                for log in [
                    "serial.log",
                    "qmp.log",
                    "qemu.log",
                    "spec.json",
                    "state.json",
                ] {
                    let target =
                        artifacts.join(format!("{}-{log}", vm.file_name().to_string_lossy()));
                    let _ = std::fs::copy(vm.path().join(log), target);
                }
            }
        }
    }
}

async fn start_agent(data_dir: &Path) -> AgentHandle {
    start_agent_with_roles(data_dir, &["host"]).await
}

async fn start_agent_with_roles(data_dir: &Path, roles: &[&str]) -> AgentHandle {
    start_agent_with(data_dir, roles, &[]).await
}

/// An agent with `settings` on top of the test defaults.
async fn start_agent_with(
    data_dir: &Path,
    roles: &[&str],
    settings: &[(&str, &str)],
) -> AgentHandle {
    let mut config = Config::default();
    let defaults = [
        ("agent.control_port", "0"),
        ("agent.transfer_port", "0"),
        ("agent.bind_address", "127.0.0.1"),
    ];
    for &(key, value) in defaults.iter().chain(settings) {
        config
            .set(key, value.to_owned(), Source::Flag(key.to_owned()))
            .expect("known setting");
    }
    drover_agent::start(AgentOptions {
        data_dir: data_dir.to_owned(),
        config,
        driver: Arc::new(QemuDriver::new(QemuConfig::default())),
        enrollment_code: None,
        roles: roles.iter().map(|role| (*role).to_owned()).collect(),
    })
    .await
    .expect("agent starts")
}

fn first_use_client() -> reqwest::Client {
    let (tls, _presented) = drover_tls::first_use_client_config().expect("first-use config");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client")
}

/// The server's side: its CA and the client certificate it shows agents.
struct Server {
    ca: CertificateAuthority,
    identity: Identity,
}

impl Server {
    fn new() -> Self {
        let ca = CertificateAuthority::generate("test CA").expect("CA");
        let identity = ca
            .issue("drover-server", &["drover-server".into()])
            .expect("client cert");
        Self { ca, identity }
    }

    fn client(&self) -> reqwest::Client {
        let tls = drover_tls::client_config(self.ca.cert_pem(), Some(&self.identity))
            .expect("mTLS config");
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .expect("client")
    }

    /// Enrolls the agent the way the server does.
    async fn enroll(&self, agent: &AgentHandle) {
        let client = first_use_client();
        let base = format!("https://{}", agent.control_addr);
        let code = agent
            .enrollment_code
            .clone()
            .expect("a fresh agent has a code");
        let response = client
            .post(format!("{base}/v1/enroll"))
            .json(&EnrollBegin { code: code.clone() })
            .send()
            .await
            .expect("enroll");
        assert_eq!(response.status(), StatusCode::OK);
        let csr: EnrollCsr = response.json().await.expect("CSR");
        let cert_pem = self
            .ca
            .sign_request(&csr.csr_pem, &csr.hostname, &["127.0.0.1".into()])
            .expect("sign");
        let response = client
            .post(format!("{base}/v1/enroll/complete"))
            .json(&EnrollComplete {
                code,
                ca_pem: self.ca.cert_pem().to_owned(),
                cert_pem,
            })
            .send()
            .await
            .expect("complete");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// The WebSocket of a VM's serial console.
    async fn console(&self, agent: &AgentHandle, vm_id: VmId) -> Console {
        let tls = drover_tls::client_config(self.ca.cert_pem(), Some(&self.identity))
            .expect("mTLS config");
        let url = format!("wss://{}/v1/vms/{vm_id}/console", agent.control_addr);
        let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls))),
        )
        .await
        .expect("console WebSocket");
        socket
    }
}

/// Typed calls to an enrolled agent.
struct Agent {
    client: reqwest::Client,
    base: String,
}

impl Agent {
    fn new(server: &Server, handle: &AgentHandle) -> Self {
        Self {
            client: server.client(),
            base: format!("https://{}", handle.control_addr),
        }
    }

    async fn define(&self, spec: &AgentVmSpec) -> reqwest::Response {
        self.client
            .put(format!("{}/v1/vms/{}", self.base, spec.id))
            .json(spec)
            .send()
            .await
            .expect("PUT vm")
    }

    async fn validate(&self, spec: &AgentVmSpec) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/vms/validate", self.base))
            .json(spec)
            .send()
            .await
            .expect("POST validate")
    }

    async fn act(&self, vm_id: VmId, action: VmAction) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/vms/{vm_id}/actions", self.base))
            .json(&VmActionRequest { action })
            .send()
            .await
            .expect("POST action")
    }

    async fn act_ok(&self, vm_id: VmId, action: VmAction) -> VmRuntime {
        let response = self.act(vm_id, action).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::OK, "{action}: {text}");
        serde_json::from_str(&text).expect("VmRuntime")
    }

    async fn vms(&self) -> Vec<VmRuntime> {
        self.client
            .get(format!("{}/v1/vms", self.base))
            .send()
            .await
            .expect("GET vms")
            .json()
            .await
            .expect("runtimes")
    }

    /// Serves `path` as share `name` (the agent has the library role).
    async fn add_share(&self, name: &str, path: &Path) {
        let response = self
            .client
            .put(format!("{}/v1/library/shares/{name}", self.base))
            .json(&drover_api::library::AgentShare {
                path: path.display().to_string(),
            })
            .send()
            .await
            .expect("PUT share");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Imports `source` into share `share` as `name`.
    async fn import(
        &self,
        share: &str,
        source: &Path,
        name: &str,
    ) -> drover_api::library::LibraryFile {
        self.client
            .post(format!("{}/v1/library/shares/{share}/import", self.base))
            .json(&drover_api::library::AgentImport {
                source: source.display().to_string(),
                name: name.to_owned(),
            })
            .send()
            .await
            .expect("import")
            .json()
            .await
            .expect("file")
    }

    async fn delete(&self, vm_id: VmId) -> StatusCode {
        self.client
            .delete(format!("{}/v1/vms/{vm_id}", self.base))
            .send()
            .await
            .expect("DELETE vm")
            .status()
    }

    async fn events(&self) -> EventReader {
        let response = self
            .client
            .get(format!("{}/v1/events", self.base))
            .send()
            .await
            .expect("GET events");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().expect("ascii"),
            "application/x-ndjson"
        );
        EventReader {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: ErrorBody = response.json().await.expect("error body");
    (status, body.error.code, body.error.message)
}

struct EventReader {
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buffer: Vec<u8>,
}

impl EventReader {
    async fn next(&mut self) -> AgentEvent {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line).expect("one AgentEvent per line");
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next())
                .await
                .expect("an event within the timeout")
                .expect("the stream goes on")
                .expect("stream chunk");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Skips events until a change of `vm_id` to `state` arrives, and returns it.
    async fn wait_for(&mut self, vm_id: VmId, state: VmState) -> VmRuntime {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if let AgentEvent::Vm(runtime) = self.next().await
                && runtime.vm_id == vm_id
                && runtime.state == state
            {
                return runtime;
            }
        }
        panic!("no event {state} for {vm_id} within {BOOT_TIMEOUT:?}");
    }
}

fn tiny_spec(name: &str, cmdline: &str) -> AgentVmSpec {
    let guest = drover_testkit::guest();
    AgentVmSpec {
        id: VmId::new(),
        name: name.to_owned(),
        cpus: 1,
        memory_mib: 192,
        disk: VmDisk::None,
        kernel: Some(guest.kernel.display().to_string()),
        initrd: Some(guest.initrd.display().to_string()),
        cmdline: Some(cmdline.to_owned()),
        nics: vec![],
        port_forwards: vec![],
        seed: None,
        devices: Default::default(),
    }
}

#[tokio::test]
async fn enrollment_mutual_tls_and_bad_requests() {
    let data_dir = DataDir::new("enrollment_mutual_tls_and_bad_requests");
    let handle = start_agent(data_dir.path()).await;
    let code = handle
        .enrollment_code
        .clone()
        .expect("a code at first start");
    let stored =
        std::fs::read_to_string(data_dir.path().join("enrollment-code")).expect("stored code");
    assert_eq!(stored.trim(), code);
    let base = format!("https://{}", handle.control_addr);
    let anonymous = first_use_client();

    let response = anonymous
        .post(format!("{base}/v1/enroll"))
        .json(&EnrollBegin {
            code: "WRONG-CODE".into(),
        })
        .send()
        .await
        .expect("enroll");
    let (status, code_name, _) = error_code(response).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::FORBIDDEN, "enrollment_code_invalid")
    );
    let response = anonymous
        .get(format!("{base}/v1/host"))
        .send()
        .await
        .expect("host");
    let (status, code_name, _) = error_code(response).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::CONFLICT, "agent_not_enrolled")
    );

    let server = Server::new();
    server.enroll(&handle).await;
    assert!(
        !data_dir.path().join("enrollment-code").exists(),
        "the code is forgotten"
    );

    let refused = first_use_client()
        .get(format!("{base}/v1/host"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a client without certificate is refused: {refused:?}"
    );

    let agent = Agent::new(&server, &handle);
    let host: AgentHostInfo = agent
        .client
        .get(format!("{base}/v1/host"))
        .send()
        .await
        .expect("host")
        .json()
        .await
        .expect("host info");
    assert!(host.cpus >= 1 && host.memory_mib > 0 && host.disk_free_bytes > 0);
    assert_eq!(host.agent_version, drover_api::VERSION);
    let response = agent
        .client
        .post(format!("{base}/v1/enroll"))
        .json(&EnrollBegin { code })
        .send()
        .await
        .expect("enroll again");
    assert_eq!(error_code(response).await.1, "agent_already_enrolled");

    // A missing kernel is refused and leaves nothing behind.
    let mut missing_kernel = tiny_spec("no-kernel", "console=ttyS0 quiet");
    missing_kernel.kernel = Some("/nonexistent/vmlinux".into());
    let (status, code_name, message) = error_code(agent.define(&missing_kernel).await).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "kernel_not_found")
    );
    assert!(message.contains("/nonexistent/vmlinux"), "{message}");
    assert!(!data_dir.vm_dir(missing_kernel.id).exists());
    assert_eq!(agent.vms().await, Vec::new());

    let mut missing_initrd = tiny_spec("no-initrd", "console=ttyS0 quiet");
    missing_initrd.initrd = Some("/nonexistent/initrd.gz".into());
    let (status, code_name, _) = error_code(agent.validate(&missing_initrd).await).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "initrd_not_found")
    );
    let valid = tiny_spec("valid", "console=ttyS0 quiet");
    assert_eq!(
        agent.validate(&valid).await.status(),
        StatusCode::NO_CONTENT
    );

    // Defining is idempotent; actions that make no sense in the state are conflicts.
    let spec = tiny_spec("stopped-vm", "console=ttyS0 quiet");
    for _ in 0..2 {
        let response = agent.define(&spec).await;
        assert_eq!(response.status(), StatusCode::OK);
        let runtime: VmRuntime = response.json().await.expect("runtime");
        assert_eq!(runtime.state, VmState::Stopped);
    }
    let mut changed = spec.clone();
    changed.memory_mib = 256;
    assert_eq!(
        error_code(agent.define(&changed).await).await.1,
        "vm_spec_conflict"
    );
    let (status, code_name, message) = error_code(agent.act(spec.id, VmAction::Pause).await).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::CONFLICT, "vm_state_conflict")
    );
    assert!(message.contains("Stopped"), "{message}");
    let (status, code_name, _) = error_code(agent.act(VmId::new(), VmAction::Start).await).await;
    assert_eq!(
        (status, code_name.as_str()),
        (StatusCode::NOT_FOUND, "vm_not_found")
    );
    let response = agent
        .client
        .get(format!("{base}/v1/vms/{}/console", spec.id))
        .send()
        .await
        .expect("console");
    assert_eq!(error_code(response).await.1, "vm_not_running");
    let response = agent
        .client
        .put(format!("{base}/v1/vms/{}", spec.id))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("bad body");
    assert_eq!(error_code(response).await.1, "request_invalid");

    assert_eq!(agent.delete(spec.id).await, StatusCode::NO_CONTENT);
    assert_eq!(agent.delete(spec.id).await, StatusCode::NO_CONTENT);
    assert!(!data_dir.vm_dir(spec.id).exists());
    assert_eq!(agent.vms().await, Vec::new());
    handle.shutdown().await;
}

/// Reads the console until `marker` shows; returns everything read.
async fn read_console_until(
    console: &mut Console,
    seen: &mut String,
    marker: &str,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !seen.contains(marker) {
        match tokio::time::timeout_at(deadline, console.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return false,
        }
    }
    true
}

/// Types `command` into the guest's shell until `answer` shows: the shell may still be starting,
/// and typing again is harmless.
async fn run_in_shell(
    console: &mut Console,
    seen: &mut String,
    command: &str,
    answer: &str,
) -> bool {
    for _ in 0..6 {
        console
            .send(Message::Binary(format!("{command}\n").into_bytes().into()))
            .await
            .expect("type into the console");
        if read_console_until(console, seen, answer, Duration::from_secs(5)).await {
            return true;
        }
    }
    false
}

/// Whether the agent closes the console WebSocket within the timeout.
async fn closes(console: &mut Console) -> bool {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(Ok(message)) = console.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn tiny_guest_runs_with_console_events_and_acpi_shutdown() {
    let data_dir = DataDir::new("tiny_guest_runs_with_console_events_and_acpi_shutdown");
    let handle = start_agent(data_dir.path()).await;
    let server = Server::new();
    server.enroll(&handle).await;
    let agent = Agent::new(&server, &handle);
    let mut events = agent.events().await;
    assert!(
        matches!(events.next().await, AgentEvent::Snapshot { ref vms, .. } if vms.is_empty()),
        "a snapshot comes first"
    );

    let spec = tiny_spec("console-vm", "console=ttyS0 quiet tiny.shell=1");
    assert_eq!(agent.define(&spec).await.status(), StatusCode::OK);
    let runtime = agent.act_ok(spec.id, VmAction::Start).await;
    assert_eq!(runtime.state, VmState::Running);
    events.wait_for(spec.id, VmState::Running).await;

    let mut console = server.console(&handle, spec.id).await;
    let mut seen = String::new();
    assert!(
        read_console_until(&mut console, &mut seen, "TINYVM-READY", BOOT_TIMEOUT).await,
        "TINYVM-READY on the console; got: {seen}"
    );
    drover_testkit::wait_for_text(
        &data_dir.vm_dir(spec.id).join("serial.log"),
        "TINYVM-READY",
        EVENT_TIMEOUT,
    )
    .await
    .expect("the serial log has the marker too");
    assert!(
        run_in_shell(&mut console, &mut seen, "echo MARK$((40+2))", "MARK42").await,
        "the guest shell answered; console: {seen}"
    );

    // QEMU serves one console client: a new session takes over and the old one is closed.
    let mut second = server.console(&handle, spec.id).await;
    assert!(closes(&mut console).await, "the first console is closed");
    let mut seen = String::new();
    assert!(
        run_in_shell(&mut second, &mut seen, "echo MARK$((50+5))", "MARK55").await,
        "the second console works; console: {seen}"
    );

    let started = Instant::now();
    let runtime = agent.act_ok(spec.id, VmAction::Shutdown).await;
    assert_eq!(runtime.state, VmState::Stopped);
    assert!(started.elapsed() < drover_agent::SHUTDOWN_TIMEOUT);
    events.wait_for(spec.id, VmState::Stopped).await;
    assert!(
        closes(&mut second).await,
        "the console closes when the VM stops"
    );

    assert_eq!(agent.delete(spec.id).await, StatusCode::NO_CONTENT);
    handle.shutdown().await;
}

#[tokio::test]
async fn killed_qemu_fails_and_a_restarted_agent_readopts_its_vm() {
    let data_dir = DataDir::new("killed_qemu_fails_and_a_restarted_agent_readopts_its_vm");
    let handle = start_agent(data_dir.path()).await;
    let server = Server::new();
    server.enroll(&handle).await;
    let agent = Agent::new(&server, &handle);
    let mut events = agent.events().await;
    assert!(matches!(events.next().await, AgentEvent::Snapshot { .. }));

    let spec = tiny_spec("survivor", "console=ttyS0 quiet");
    assert_eq!(agent.define(&spec).await.status(), StatusCode::OK);
    agent.act_ok(spec.id, VmAction::Start).await;
    let pid = data_dir.qemu_pid(spec.id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill QEMU from outside");
    let failed = events.wait_for(spec.id, VmState::Failed).await;
    assert!(
        failed.reason.is_some_and(|reason| !reason.is_empty()),
        "a failure says why"
    );

    assert_eq!(
        agent.act_ok(spec.id, VmAction::Start).await.state,
        VmState::Running
    );
    let pid = data_dir.qemu_pid(spec.id);
    handle.shutdown().await;

    let handle = start_agent(data_dir.path()).await;
    assert_eq!(
        handle.enrollment_code, None,
        "an enrolled agent stays enrolled"
    );
    let agent = Agent::new(&server, &handle);
    let vms = agent.vms().await;
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Running, "{vms:?}");
    assert_eq!(
        data_dir.qemu_pid(spec.id),
        pid,
        "the same QEMU is re-adopted"
    );
    assert_eq!(
        agent.act_ok(spec.id, VmAction::Pause).await.state,
        VmState::Paused
    );
    assert_eq!(
        agent.act_ok(spec.id, VmAction::Resume).await.state,
        VmState::Running
    );

    assert_eq!(agent.delete(spec.id).await, StatusCode::NO_CONTENT);
    // QEMU is a daemon: init reaps it, so its /proc entry goes soon after it dies.
    drover_testkit::wait_until("QEMU gone after delete", EVENT_TIMEOUT, async || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await
    .expect("delete ends QEMU");
    handle.shutdown().await;
}

/// Serves `body` once on 127.0.0.1 as an HTTP/1.1 response announcing `announced` bytes, then
/// closes the connection: a download that fails midway when `announced` is larger.
async fn serve_once(body: Vec<u8>, announced: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0_u8; 4096];
        let _ = socket.read(&mut request).await;
        let head =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(&body).await;
        let _ = socket.shutdown().await;
    });
    format!("http://{address}/images/disk.qcow2")
}

fn make_qcow2(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg("4M")
        .status()
        .expect("qemu-img");
    assert!(status.success());
    path
}

fn share_listing(dir: &Path) -> Vec<String> {
    drover_testkit::dir_names(dir)
}

#[tokio::test]
async fn library_shares_imports_and_ranged_transfers() {
    use drover_api::library::{AgentImport, AgentShare, LibraryFile};
    let data_dir = DataDir::new("library_shares_imports_and_ranged_transfers");
    let sources = tempfile::tempdir().expect("temp dir");
    let share_dir = data_dir.path().join("share");
    let handle = start_agent_with_roles(data_dir.path(), &["host", "library"]).await;
    let server = Server::new();
    server.enroll(&handle).await;
    let agent = Agent::new(&server, &handle);

    let info: AgentHostInfo = agent
        .client
        .get(format!("{}/v1/host", agent.base))
        .send()
        .await
        .expect("GET host")
        .json()
        .await
        .expect("host info");
    assert_eq!(info.roles, ["host", "library"]);
    assert_eq!(info.transfer_port, Some(handle.transfer_addr.port()));

    let shares = format!("{}/v1/library/shares", agent.base);
    let add = |path: String| {
        agent
            .client
            .put(format!("{shares}/main"))
            .json(&AgentShare { path })
            .send()
    };
    assert_eq!(
        add("relative/dir".into()).await.expect("PUT").status(),
        StatusCode::BAD_REQUEST
    );
    let share_path = share_dir.display().to_string();
    assert_eq!(
        add(share_path.clone()).await.expect("PUT").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        add(share_path).await.expect("PUT again").status(),
        StatusCode::NO_CONTENT
    );

    let import = |source: String, name: &str| {
        agent
            .client
            .post(format!("{shares}/main/import"))
            .json(&AgentImport {
                source,
                name: name.to_owned(),
            })
            .send()
    };
    let qcow2 = make_qcow2(sources.path(), "base.qcow2");
    let response = import(qcow2.display().to_string(), "base")
        .await
        .expect("import");
    assert_eq!(response.status(), StatusCode::OK);
    let imported: LibraryFile = response.json().await.expect("file");
    assert_eq!(imported.path, "base.qcow2");

    // Bad input leaves the share as it was.
    let text = sources.path().join("notes.txt");
    std::fs::write(&text, "hello\n").expect("write");
    let bad: [(String, &str, StatusCode, &str); 4] = [
        (
            text.display().to_string(),
            "notes",
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_an_image",
        ),
        (
            qcow2.display().to_string(),
            "../up",
            StatusCode::UNPROCESSABLE_ENTITY,
            "path_outside_share",
        ),
        (
            qcow2.display().to_string(),
            "base",
            StatusCode::CONFLICT,
            "library_file_exists",
        ),
        (
            serve_once(std::fs::read(&qcow2).expect("read"), 10 << 20).await,
            "cut",
            StatusCode::UNPROCESSABLE_ENTITY,
            "import_download_failed",
        ),
    ];
    for (source, name, status, code) in bad {
        let (got_status, got_code, message) =
            error_code(import(source.clone(), name).await.expect("import")).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{source}: {message}"
        );
    }
    assert_eq!(share_listing(&share_dir), ["base.qcow2"]);

    // A whole download imports.
    let bytes = std::fs::read(&qcow2).expect("read");
    let url = serve_once(bytes.clone(), bytes.len()).await;
    let response = import(url, "fetched").await.expect("import URL");
    assert_eq!(response.status(), StatusCode::OK);

    // Files dropped by hand are indexed; files that are not images are not.
    std::fs::write(share_dir.join("dropped.img"), vec![0_u8; 1 << 20]).expect("write");
    std::fs::write(share_dir.join("readme.txt"), "notes").expect("write");
    let files: Vec<LibraryFile> = agent
        .client
        .get(format!("{shares}/main/files"))
        .send()
        .await
        .expect("GET files")
        .json()
        .await
        .expect("files");
    let listed: Vec<(&str, &str)> = files
        .iter()
        .map(|file| (file.path.as_str(), file.format.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("base.qcow2", "qcow2"),
            ("dropped.img", "raw"),
            ("fetched.qcow2", "qcow2")
        ]
    );

    // The transfer port: ranges with the SHA-256 as a strong ETag.
    let stored = std::fs::read(share_dir.join("base.qcow2")).expect("read");
    let file_url = format!(
        "https://{}/v1/shares/main/files/base.qcow2",
        handle.transfer_addr
    );
    let etag = format!("\"{}\"", imported.sha256);
    let whole = agent.client.get(&file_url).send().await.expect("GET file");
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["etag"].to_str().expect("ascii"), etag);
    assert_eq!(whole.bytes().await.expect("body"), stored);
    let tail = agent
        .client
        .get(&file_url)
        .header("range", "bytes=1000-")
        .header("if-range", &etag)
        .send()
        .await
        .expect("GET range");
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        tail.headers()["content-range"].to_str().expect("ascii"),
        format!("bytes 1000-{}/{}", stored.len() - 1, stored.len())
    );
    assert_eq!(tail.bytes().await.expect("body"), stored[1000..]);
    let changed = agent
        .client
        .get(&file_url)
        .header("range", "bytes=1000-")
        .header("if-range", "\"another-version\"")
        .send()
        .await
        .expect("GET stale range");
    assert_eq!(changed.status(), StatusCode::OK);
    let refused = agent
        .client
        .get(&file_url)
        .header("if-match", "\"another-version\"")
        .send()
        .await
        .expect("GET if-match");
    assert_eq!(refused.status(), StatusCode::PRECONDITION_FAILED);
    let escape = agent
        .client
        .get(format!(
            "https://{}/v1/shares/main/files/..%2F..%2Fidentity.pem",
            handle.transfer_addr
        ))
        .send()
        .await
        .expect("GET escape");
    assert_eq!(error_code(escape).await.1, "path_outside_share");
    // Without a certificate from the CA, the transfer port does not answer at all.
    assert!(first_use_client().get(&file_url).send().await.is_err());
    handle.shutdown().await;

    // A host-only agent holds no shares.
    let host_dir = DataDir::new("library_shares_imports_and_ranged_transfers_host");
    let host = start_agent(host_dir.path()).await;
    server.enroll(&host).await;
    let host_agent = Agent::new(&server, &host);
    let response = host_agent
        .client
        .put(format!("{}/v1/library/shares/main", host_agent.base))
        .json(&AgentShare {
            path: host_dir.path().join("s").display().to_string(),
        })
        .send()
        .await
        .expect("PUT share");
    assert_eq!(error_code(response).await.1, "not_a_library_server");
    host.shutdown().await;
}

/// A raw disk of random bytes (incompressible, so the qcow2 made from it is as large).
fn random_raw(dir: &Path, mib: usize) -> PathBuf {
    use std::io::Read;
    let mut bytes = vec![0_u8; mib << 20];
    std::fs::File::open("/dev/urandom")
        .expect("urandom")
        .read_exact(&mut bytes)
        .expect("random bytes");
    let path = dir.join("random.raw");
    std::fs::write(&path, bytes).expect("write");
    path
}

/// A library server with share `main` in its data directory, and a host, both enrolled.
struct LibraryAndHost {
    library_dir: DataDir,
    host_dir: DataDir,
    library: AgentHandle,
    host: AgentHandle,
    server: Server,
    library_agent: Agent,
    host_agent: Agent,
    share: PathBuf,
}

impl LibraryAndHost {
    async fn start(
        library_test: &'static str,
        host_test: &'static str,
        library_roles: &[&str],
    ) -> Self {
        let library_dir = DataDir::new(library_test);
        let host_dir = DataDir::new(host_test);
        let library = start_agent_with_roles(library_dir.path(), library_roles).await;
        let host = start_agent(host_dir.path()).await;
        let server = Server::new();
        server.enroll(&library).await;
        server.enroll(&host).await;
        let library_agent = Agent::new(&server, &library);
        let host_agent = Agent::new(&server, &host);
        let share = library_dir.path().join("share");
        library_agent.add_share("main", &share).await;
        Self {
            library_dir,
            host_dir,
            library,
            host,
            server,
            library_agent,
            host_agent,
            share,
        }
    }
}

#[tokio::test]
async fn hosts_fetch_library_images_once_resuming_and_verifying() {
    use drover_api::library::{AgentCachedImage, AgentFetch};
    use drover_image::transfer::{self, Progress};
    let LibraryAndHost {
        library_dir: _library_dir,
        host_dir,
        library,
        host,
        server,
        library_agent,
        host_agent,
        share,
    } = LibraryAndHost::start(
        "hosts_fetch_library_images_library",
        "hosts_fetch_library_images_host",
        &["library"],
    )
    .await;
    let sources = tempfile::tempdir().expect("temp dir");
    let raw = random_raw(sources.path(), 8);
    let file = library_agent.import("main", &raw, "base").await;
    let stored = std::fs::read(share.join("base.qcow2")).expect("read");
    let total = u64::try_from(stored.len()).expect("size");
    let url = format!(
        "https://{}/v1/shares/main/files/base.qcow2",
        library.transfer_addr
    );

    // A transfer cut short left 3 MiB: the retry fetches only the rest.
    let downloads = tempfile::tempdir().expect("temp dir");
    let target = downloads.path().join("resumed.qcow2");
    let partial = transfer::partial_path(&target, &file.sha256);
    std::fs::write(&partial, &stored[..3 << 20]).expect("write partial");
    let mut last = None;
    transfer::fetch(&server.client(), &url, &file.sha256, &target, |progress| {
        last = Some(progress);
    })
    .await
    .expect("resumed fetch");
    assert_eq!(
        last,
        Some(Progress {
            done: total,
            total,
            received: total - (3 << 20),
        })
    );
    assert_eq!(std::fs::read(&target).expect("read"), stored);
    assert!(!partial.exists());

    // Partial bytes of another version: the whole is checked, the bad file never takes its name,
    // and the next attempt starts over and succeeds.
    let target = downloads.path().join("mixed.qcow2");
    let partial = transfer::partial_path(&target, &file.sha256);
    std::fs::write(&partial, vec![7_u8; 1 << 20]).expect("write partial");
    let error = transfer::fetch(&server.client(), &url, &file.sha256, &target, |_| {})
        .await
        .expect_err("mixed versions are refused");
    assert!(
        matches!(error, drover_image::ImageError::TransferCorrupt { .. }),
        "{error:?}"
    );
    assert!(!target.exists() && !partial.exists());
    transfer::fetch(&server.client(), &url, &file.sha256, &target, |_| {})
        .await
        .expect("a fresh fetch");
    assert_eq!(std::fs::read(&target).expect("read"), stored);

    // The library's file is not the version asked for: refused, nothing kept.
    let target = downloads.path().join("stale.qcow2");
    let stale = "0".repeat(64);
    let error = transfer::fetch(&server.client(), &url, &stale, &target, |_| {})
        .await
        .expect_err("another version");
    assert!(
        matches!(error, drover_image::ImageError::TransferCorrupt { .. }),
        "{error:?}"
    );
    assert!(!target.exists() && !transfer::partial_path(&target, &stale).exists());

    // Agent to agent: three concurrent requests for one image transfer it once.
    let fetch = || {
        host_agent
            .client
            .post(format!("{}/v1/images/fetch", host_agent.base))
            .json(&AgentFetch {
                url: url.clone(),
                sha256: file.sha256.clone(),
            })
            .send()
    };
    let answers = futures_util::future::join_all([fetch(), fetch(), fetch()]).await;
    let mut cached = Vec::new();
    for answer in answers {
        let answer = answer.expect("POST fetch");
        assert_eq!(answer.status(), StatusCode::OK);
        cached.push(
            answer
                .json::<AgentCachedImage>()
                .await
                .expect("cached image"),
        );
    }
    assert_eq!(
        cached.iter().filter(|image| image.fetched).count(),
        1,
        "{cached:?}"
    );
    assert_eq!(
        cached.iter().map(|image| image.bytes_received).sum::<u64>(),
        total
    );
    let cached_path = host_dir
        .path()
        .join("images")
        .join(format!("{}.qcow2", file.sha256));
    assert_eq!(cached[0].path, cached_path.display().to_string());
    assert_eq!(std::fs::read(&cached_path).expect("read"), stored);

    // A bad fingerprint is refused before any transfer.
    let response = host_agent
        .client
        .post(format!("{}/v1/images/fetch", host_agent.base))
        .json(&AgentFetch {
            url: url.clone(),
            sha256: "../../etc".to_owned(),
        })
        .send()
        .await
        .expect("POST fetch");
    assert_eq!(error_code(response).await.1, "request_invalid");
    library.shutdown().await;
    host.shutdown().await;
}

impl Agent {
    fn checkpoints_url(&self, vm_id: VmId) -> String {
        format!("{}/v1/vms/{vm_id}/checkpoints", self.base)
    }

    async fn checkpoint_create(&self, vm_id: VmId, tag: &str) -> reqwest::Response {
        self.client
            .post(self.checkpoints_url(vm_id))
            .json(&AgentCheckpointCreate { tag: tag.into() })
            .send()
            .await
            .expect("POST checkpoint")
    }

    async fn checkpoint_restore(&self, vm_id: VmId, tag: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/{tag}/restore", self.checkpoints_url(vm_id)))
            .send()
            .await
            .expect("POST restore")
    }

    async fn checkpoint_delete(&self, vm_id: VmId, tag: &str) -> StatusCode {
        self.client
            .delete(format!("{}/{tag}", self.checkpoints_url(vm_id)))
            .send()
            .await
            .expect("DELETE checkpoint")
            .status()
    }

    async fn checkpoints(&self, vm_id: VmId) -> Vec<(String, bool)> {
        let on_disk: Vec<AgentCheckpoint> = self
            .client
            .get(self.checkpoints_url(vm_id))
            .send()
            .await
            .expect("GET checkpoints")
            .json()
            .await
            .expect("checkpoints");
        on_disk
            .into_iter()
            .map(|checkpoint| (checkpoint.tag, checkpoint.vm_state_bytes > 0))
            .collect()
    }
}

async fn checkpoint_done(response: reqwest::Response) -> AgentCheckpointDone {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).expect("AgentCheckpointDone")
}

#[tokio::test]
async fn saved_vms_are_readopted_and_checkpoints_follow_the_vm_state() {
    let data_dir = DataDir::new("saved_vms_are_readopted_and_checkpoints_follow_the_vm_state");
    let handle = start_agent(data_dir.path()).await;
    let server = Server::new();
    server.enroll(&handle).await;
    let agent = Agent::new(&server, &handle);
    let mut spec = tiny_spec("saver", "console=ttyS0 quiet tiny.root=/dev/vda");
    spec.disk = VmDisk::Image {
        path: drover_testkit::guest().rootfs_qcow2.display().to_string(),
    };
    assert_eq!(agent.define(&spec).await.status(), StatusCode::OK);
    let diskless = tiny_spec("diskless", "console=ttyS0 quiet");
    assert_eq!(agent.define(&diskless).await.status(), StatusCode::OK);
    let (status, code, _) = error_code(agent.checkpoint_create(diskless.id, "c0").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "vm_has_no_disk")
    );
    let (status, code, _) = error_code(agent.checkpoint_create(spec.id, "-bad tag").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "request_invalid")
    );

    agent.act_ok(spec.id, VmAction::Start).await;
    let done = checkpoint_done(agent.checkpoint_create(spec.id, "c1").await).await;
    assert!(done.with_memory);
    assert_eq!(done.runtime.state, VmState::Running);
    let (status, code, _) = error_code(agent.checkpoint_restore(spec.id, "nope").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "checkpoint_not_found")
    );

    assert_eq!(
        agent.act_ok(spec.id, VmAction::Save).await.state,
        VmState::Saved
    );
    assert!(data_dir.vm_dir(spec.id).join("saved.state").exists());
    let (status, code, _) = error_code(agent.checkpoint_restore(spec.id, "c1").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "vm_state_conflict")
    );
    handle.shutdown().await;

    let handle = start_agent(data_dir.path()).await;
    let agent = Agent::new(&server, &handle);
    let states: Vec<(VmId, VmState)> = agent
        .vms()
        .await
        .into_iter()
        .map(|runtime| (runtime.vm_id, runtime.state))
        .collect();
    assert!(
        states.contains(&(spec.id, VmState::Saved)),
        "a saved VM is re-adopted as saved: {states:?}"
    );
    assert_eq!(
        agent.act_ok(spec.id, VmAction::Start).await.state,
        VmState::Running
    );
    assert!(!data_dir.vm_dir(spec.id).join("saved.state").exists());
    agent.act_ok(spec.id, VmAction::Save).await;
    assert_eq!(
        agent.act_ok(spec.id, VmAction::Stop).await.state,
        VmState::Stopped,
        "stop discards the saved state"
    );
    assert!(!data_dir.vm_dir(spec.id).join("saved.state").exists());

    // Memory cannot be loaded into other devices than it was saved with.
    let nics = format!("{}/v1/vms/{}/nics", agent.base, spec.id);
    let nic = AgentNic {
        name: "nic0".into(),
        mac: "52:54:00:d0:00:09".into(),
        attachment: NicAttachment::User,
    };
    let added = agent
        .client
        .post(&nics)
        .json(&nic)
        .send()
        .await
        .expect("POST nic");
    assert_eq!(added.status(), StatusCode::NO_CONTENT);
    let (status, code, _) = error_code(agent.checkpoint_restore(spec.id, "c1").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "checkpoint_devices_changed")
    );
    let removed = agent
        .client
        .delete(format!("{nics}/nic0"))
        .send()
        .await
        .expect("DELETE nic");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);

    let done = checkpoint_done(agent.checkpoint_restore(spec.id, "c1").await).await;
    assert!(done.with_memory);
    assert_eq!(done.runtime.state, VmState::Running, "memory restored runs");
    agent.act_ok(spec.id, VmAction::Stop).await;
    let done = checkpoint_done(agent.checkpoint_create(spec.id, "c2").await).await;
    assert!(!done.with_memory);
    agent.act_ok(spec.id, VmAction::Start).await;
    let done = checkpoint_done(agent.checkpoint_restore(spec.id, "c2").await).await;
    assert!(!done.with_memory);
    assert_eq!(
        done.runtime.state,
        VmState::Stopped,
        "a stopped checkpoint gives a stopped VM"
    );
    assert_eq!(
        agent.checkpoints(spec.id).await,
        [("c1".to_owned(), true), ("c2".to_owned(), false)]
    );
    assert_eq!(
        agent.checkpoint_delete(spec.id, "c2").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        agent.checkpoint_delete(spec.id, "c2").await,
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    assert_eq!(agent.checkpoints(spec.id).await, [("c1".to_owned(), true)]);

    agent.act_ok(spec.id, VmAction::Start).await;
    agent.act_ok(spec.id, VmAction::Save).await;
    assert_eq!(agent.delete(spec.id).await, StatusCode::NO_CONTENT);
    assert!(
        !data_dir.vm_dir(spec.id).exists(),
        "deleting a saved VM removes its saved state with its files"
    );
    assert_eq!(agent.delete(diskless.id).await, StatusCode::NO_CONTENT);
    handle.shutdown().await;
}

/// Whether a qcow2 disk shows the guest the bytes of a raw file (`qemu-img compare`).
fn same_data(qcow2: &Path, raw: &Path) -> bool {
    std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "raw"])
        .arg(qcow2)
        .arg(raw)
        .status()
        .expect("qemu-img compare")
        .success()
}

/// `qemu-img info`'s backing file of a disk.
fn backing_file(disk: &Path) -> Option<String> {
    let output = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(disk)
        .output()
        .expect("qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    info["backing-filename"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn stopped_vm_files_move_between_agents_resuming_and_verifying() {
    use drover_api::transfer::{AgentVmFile, AgentVmFilesFetch, AgentVmFilesFetched, VmFilesPlace};
    let LibraryAndHost {
        library_dir,
        host_dir,
        library,
        host,
        server,
        library_agent,
        host_agent,
        share,
    } = LibraryAndHost::start(
        "stopped_vm_files_move_library",
        "stopped_vm_files_move_host",
        &["host", "library"],
    )
    .await;
    let sources = tempfile::tempdir().expect("temp dir");

    // A VM whose overlay holds 8 MiB of its own (random) data over an empty base.
    let raw = random_raw(sources.path(), 8);
    let base = sources.path().join("base.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("8M")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let mut spec = tiny_spec("mover", "console=ttyS0 quiet");
    spec.disk = VmDisk::Image {
        path: base.display().to_string(),
    };
    assert_eq!(host_agent.define(&spec).await.status(), StatusCode::OK);
    let disk = host_dir.vm_dir(spec.id).join("disk.qcow2");
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2", "-F", "qcow2", "-B"])
        .arg(&base)
        .arg(&raw)
        .arg(&disk)
        .status()
        .expect("qemu-img convert");
    assert!(converted.success());
    let bytes = std::fs::read(&disk).expect("read disk");
    let total = u64::try_from(bytes.len()).expect("size");

    let list = |agent: &Agent, query: &'static str| {
        agent
            .client
            .get(format!("{}/v1/vms/{}/files{query}", agent.base, spec.id))
            .send()
    };
    let files: Vec<AgentVmFile> = list(&host_agent, "")
        .await
        .expect("GET files")
        .json()
        .await
        .expect("files");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        ("disk.qcow2", total)
    );
    let file_url = |agent: &AgentHandle, query: &str| {
        format!(
            "https://{}/v1/vms/{}/files/disk.qcow2{query}",
            agent.transfer_addr, spec.id
        )
    };

    // While QEMU runs, the files are neither listed nor served.
    host_agent.act_ok(spec.id, VmAction::Start).await;
    let response = list(&host_agent, "").await.expect("GET files");
    assert_eq!(error_code(response).await.1, "vm_has_process");
    let response = server
        .client()
        .get(file_url(&host, ""))
        .send()
        .await
        .expect("GET file");
    assert_eq!(error_code(response).await.1, "vm_has_process");
    host_agent.act_ok(spec.id, VmAction::Stop).await;

    // Store: host -> library share. An earlier attempt left 3 MiB; only the rest crosses.
    let stored_dir = share.join(".stored-vms").join(spec.id.to_string());
    std::fs::create_dir_all(&stored_dir).expect("mkdir");
    let partial =
        drover_image::transfer::partial_path(&stored_dir.join("disk.qcow2"), &files[0].sha256);
    std::fs::write(&partial, &bytes[..3 << 20]).expect("write partial");
    let fetch = |agent: &Agent, request: AgentVmFilesFetch| {
        agent
            .client
            .post(format!("{}/v1/vms/{}/files/fetch", agent.base, spec.id))
            .json(&request)
            .send()
    };
    let to_share = VmFilesPlace {
        share: Some("main".to_owned()),
    };
    let response = fetch(
        &library_agent,
        AgentVmFilesFetch {
            source: host.transfer_addr.to_string(),
            from: VmFilesPlace::default(),
            to: to_share.clone(),
            files: files.clone(),
            transfer_id: Some("store-1".to_owned()),
        },
    )
    .await
    .expect("POST fetch");
    assert_eq!(response.status(), StatusCode::OK);
    let fetched: AgentVmFilesFetched = response.json().await.expect("answer");
    assert_eq!(
        (fetched.bytes_total, fetched.bytes_received),
        (total, total - (3 << 20))
    );
    assert_eq!(
        std::fs::read(stored_dir.join("disk.qcow2")).expect("read"),
        bytes
    );
    assert!(!partial.exists());
    // The stored copy is not a library item: a share listing does not show it.
    let items: Vec<drover_api::library::LibraryFile> = library_agent
        .client
        .get(format!(
            "{}/v1/library/shares/main/files",
            library_agent.base
        ))
        .send()
        .await
        .expect("GET share files")
        .json()
        .await
        .expect("files");
    assert!(items.is_empty(), "{items:?}");
    let stored: Vec<AgentVmFile> = list(&library_agent, "?share=main")
        .await
        .expect("GET stored files")
        .json()
        .await
        .expect("files");
    assert_eq!(stored, files);
    let response = server
        .client()
        .get(file_url(&library, "?share=main"))
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("GET range");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["etag"].to_str().expect("ascii"),
        format!("\"{}\"", files[0].sha256)
    );
    assert_eq!(&response.bytes().await.expect("body")[..], &bytes[..10]);

    // A defined VM's disks are never written over; another name is not a VM file.
    let back = AgentVmFilesFetch {
        source: library.transfer_addr.to_string(),
        from: to_share.clone(),
        to: VmFilesPlace::default(),
        files: files.clone(),
        transfer_id: None,
    };
    let response = fetch(&host_agent, back.clone()).await.expect("POST fetch");
    assert_eq!(error_code(response).await.1, "vm_defined_here");
    let response = server
        .client()
        .get(format!(
            "https://{}/v1/vms/{}/files/spec.json",
            host.transfer_addr, spec.id
        ))
        .send()
        .await
        .expect("GET other file");
    assert_eq!(error_code(response).await.1, "vm_file_not_found");
    assert_eq!(host_agent.delete(spec.id).await, StatusCode::NO_CONTENT);

    // Deploy: library -> a host that keeps the base elsewhere; the overlay is pointed at it.
    let moved_base = library_dir.path().join("base-here.qcow2");
    std::fs::copy(&base, &moved_base).expect("copy base");
    let fetched: AgentVmFilesFetched = fetch(&library_agent, back)
        .await
        .expect("POST fetch")
        .json()
        .await
        .expect("answer");
    assert_eq!(fetched.bytes_received, total);
    spec.disk = VmDisk::Image {
        path: moved_base.display().to_string(),
    };
    let response = library_agent.define(&spec).await;
    assert_eq!(response.status(), StatusCode::OK);
    let deployed = library_dir.vm_dir(spec.id).join("disk.qcow2");
    assert_eq!(
        backing_file(&deployed),
        Some(moved_base.display().to_string())
    );
    assert!(
        same_data(&deployed, &raw),
        "the guest's data arrived intact"
    );

    // The stored copy goes on request; then the share has no such VM.
    let removed = library_agent
        .client
        .delete(format!(
            "{}/v1/vms/{}/files?share=main",
            library_agent.base, spec.id
        ))
        .send()
        .await
        .expect("DELETE stored");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert!(!stored_dir.exists());
    let response = list(&library_agent, "?share=main")
        .await
        .expect("GET files");
    assert_eq!(error_code(response).await.1, "vm_not_found");
    let response = library_agent
        .client
        .get(format!("{}/v1/transfers/store-1", library_agent.base))
        .send()
        .await
        .expect("GET transfer");
    assert_eq!(error_code(response).await.1, "transfer_not_found");
    host.shutdown().await;
    library.shutdown().await;
}

#[tokio::test]
async fn full_clones_are_independent_copies_of_the_cached_base() {
    let LibraryAndHost {
        library_dir: _library_dir,
        host_dir,
        library,
        host,
        server: _server,
        library_agent,
        host_agent,
        share: _share,
    } = LibraryAndHost::start("full_clones_library", "full_clones_host", &["library"]).await;
    let sources = tempfile::tempdir().expect("temp dir");
    let raw = random_raw(sources.path(), 4);
    let file = library_agent.import("main", &raw, "base").await;
    let mut spec = tiny_spec("copy", "console=ttyS0 quiet");
    spec.disk = VmDisk::LibraryCopy {
        item: "base".to_owned(),
        sha256: file.sha256.clone(),
        url: format!(
            "https://{}/v1/shares/main/files/base.qcow2",
            library.transfer_addr
        ),
        virtual_size: file.virtual_size,
    };
    assert_eq!(host_agent.define(&spec).await.status(), StatusCode::OK);
    let disk = host_dir.vm_dir(spec.id).join("disk.qcow2");
    assert_eq!(
        backing_file(&disk),
        None,
        "a full clone reads through nothing"
    );
    assert!(same_data(&disk, &raw), "the copy holds the base's data");
    let cached = host_dir
        .path()
        .join("images")
        .join(format!("{}.qcow2", file.sha256));
    assert!(cached.exists(), "the base was fetched into the cache");
    // The same define again is the same VM; its disk is kept, not copied again.
    let written = std::fs::metadata(&disk)
        .expect("disk")
        .modified()
        .expect("mtime");
    assert_eq!(host_agent.define(&spec).await.status(), StatusCode::OK);
    assert_eq!(
        std::fs::metadata(&disk)
            .expect("disk")
            .modified()
            .expect("mtime"),
        written
    );
    library.shutdown().await;
    host.shutdown().await;
}

/// `POST /v1/library/shares/{name}/packages`: an OVA from a file and from a URL becomes its
/// disks plus hardware; an OVA whose download breaks off midway leaves the share as it was (no
/// download or unpacked directory behind).
#[tokio::test]
async fn library_packages_from_files_and_urls() {
    use drover_api::library::{AgentImport, AgentPackage, AgentShare};
    let data_dir = DataDir::new("library_packages_from_files_and_urls");
    let sources = tempfile::tempdir().expect("temp dir");
    let share_dir = data_dir.path().join("share");
    let handle = start_agent_with_roles(data_dir.path(), &["library"]).await;
    let server = Server::new();
    server.enroll(&handle).await;
    let agent = Agent::new(&server, &handle);
    let shares = format!("{}/v1/library/shares", agent.base);
    let added = agent
        .client
        .put(format!("{shares}/main"))
        .json(&AgentShare {
            path: share_dir.display().to_string(),
        })
        .send()
        .await
        .expect("PUT share");
    assert_eq!(added.status(), StatusCode::NO_CONTENT);

    let dir = sources.path();
    make_qcow2(dir, "app.qcow2");
    let status = std::process::Command::new("qemu-img")
        .current_dir(dir)
        .args([
            "convert",
            "-q",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .args(["app.qcow2", "app.vmdk"])
        .status()
        .expect("qemu-img");
    assert!(status.success());
    std::fs::write(
        dir.join("app.ovf"),
        r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References><File id="f" href="app.vmdk"/></References><DiskSection><Disk diskId="d" fileRef="f" capacity="4194304"/></DiskSection></Envelope>"#,
    )
    .expect("ovf");
    let status = std::process::Command::new("tar")
        .current_dir(dir)
        .args(["-cf", "app.ova", "app.ovf", "app.vmdk"])
        .status()
        .expect("tar");
    assert!(status.success());
    let ova = std::fs::read(dir.join("app.ova")).expect("read ova");

    let import = |source: String, name: &str| {
        agent
            .client
            .post(format!("{shares}/main/packages"))
            .json(&AgentImport {
                source,
                name: name.to_owned(),
            })
            .send()
    };
    let from_file = import(dir.join("app.ova").display().to_string(), "local")
        .await
        .expect("import");
    assert_eq!(from_file.status(), StatusCode::OK);
    let package: AgentPackage = from_file.json().await.expect("package");
    assert_eq!(package.files.len(), 1);
    assert_eq!(package.files[0].path, "local.qcow2");
    assert!(package.hardware.is_some());

    let whole = serve_once(ova.clone(), ova.len()).await;
    let whole = whole.replace("disk.qcow2", "app.ova");
    let from_url = import(whole, "fetched").await.expect("import URL");
    assert_eq!(from_url.status(), StatusCode::OK);

    let cut = serve_once(ova[..ova.len() / 2].to_vec(), ova.len()).await;
    let (status, code, message) = error_code(
        import(cut.replace("disk.qcow2", "app.ova"), "cut")
            .await
            .expect("import"),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "import_download_failed"),
        "{message}"
    );
    assert_eq!(share_listing(&share_dir), ["fetched.qcow2", "local.qcow2"]);
    handle.shutdown().await;
}

#[tokio::test]
async fn low_free_space_evicts_unused_cached_bases_never_one_in_use_nor_an_iso_in_a_drive() {
    let library_dir = DataDir::new("eviction_library");
    let host_dir = DataDir::new("eviction_host");
    let sources = tempfile::tempdir().expect("temp dir");
    let library = start_agent_with_roles(library_dir.path(), &["library"]).await;
    // No disk has this much free: every fetch first evicts what no VM uses.
    let host = start_agent_with(
        host_dir.path(),
        &["host"],
        &[("agent.cache_min_free", "1000T")],
    )
    .await;
    let server = Server::new();
    server.enroll(&library).await;
    server.enroll(&host).await;
    let library_agent = Agent::new(&server, &library);
    let host_agent = Agent::new(&server, &host);
    library_agent
        .add_share("main", &library_dir.path().join("share"))
        .await;
    let mut urls = Vec::new();
    for name in ["used", "in-drive", "unused", "next"] {
        let raw = sources.path().join(format!("{name}.raw"));
        std::fs::rename(random_raw(sources.path(), 1), &raw).expect("rename");
        let file = library_agent.import("main", &raw, name).await;
        let url = format!(
            "https://{}/v1/shares/main/files/{name}.qcow2",
            library.transfer_addr
        );
        urls.push((file.sha256, url));
    }
    let fetch = |(sha256, url): &(String, String)| {
        host_agent
            .client
            .post(format!("{}/v1/images/fetch", host_agent.base))
            .json(&drover_api::library::AgentFetch {
                url: url.clone(),
                sha256: sha256.clone(),
            })
            .send()
    };
    let mut spec = tiny_spec("user", "console=ttyS0 quiet");
    spec.disk = VmDisk::Library {
        item: "used".to_owned(),
        sha256: urls[0].0.clone(),
        url: urls[0].1.clone(),
    };
    // The medium in the VM's CD-ROM drive is cached the same way, and in use the same way.
    spec.devices.cdrom = Some(drover_api::cdrom::VmCdrom {
        iso: Some(Box::new(drover_api::cdrom::CdromIso {
            item: "in-drive".to_owned(),
            sha256: urls[1].0.clone(),
            url: urls[1].1.clone(),
            path: None,
        })),
    });
    assert_eq!(host_agent.define(&spec).await.status(), StatusCode::OK);
    for image in &urls[2..] {
        assert_eq!(fetch(image).await.expect("fetch").status(), StatusCode::OK);
    }
    let cached = |sha256: &str| {
        host_dir
            .path()
            .join("images")
            .join(format!("{sha256}.qcow2"))
            .exists()
    };
    assert!(cached(&urls[0].0), "the base a VM uses stays");
    assert!(cached(&urls[1].0), "the ISO in a VM's drive stays");
    assert!(!cached(&urls[2].0), "the unused base went to make room");
    assert!(cached(&urls[3].0), "the new base is in place");
    library.shutdown().await;
    host.shutdown().await;
}
