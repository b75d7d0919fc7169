//! The server with a real agent and QEMU (TCG) in one process: enroll the agent as a host,
//! create and start the tiny guest, reach its serial console through the server's relay, see
//! the guest's own power-off as Stopped through the API within a second, then delete everything.

use drover_api::config::{Config, Source};
use drover_api::{Job, JobStatus, Vm, VmState};
use drover_hv::qemu::{QemuConfig, QemuDriver};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn config(settings: &[(&str, &str)]) -> Config {
    let mut config = Config::default();
    for (key, value) in settings {
        config
            .set(key, (*value).to_owned(), Source::Flag((*key).to_owned()))
            .expect("known setting");
    }
    config
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API answers");
        let status = response.status();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Submits a job and waits for it to end.
    async fn job(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Job {
        let (status, body) = self.call(method, path, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {body}");
        let job: Job = serde_json::from_value(body).expect("a job");
        drover_testkit::wait_until(&format!("job {} to end", job.kind), timeout, async || {
            let (_, body) = self
                .call(reqwest::Method::GET, &format!("/jobs/{}", job.id), None)
                .await;
            let job: Job = serde_json::from_value(body).ok()?;
            job.status.is_finished().then_some(job)
        })
        .await
        .expect("job ends")
    }

    async fn vm(&self, name: &str) -> Option<Vm> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("/vms/{name}"), None)
            .await;
        (status == StatusCode::OK).then(|| serde_json::from_value(body).expect("a VM"))
    }
}

/// An agent on `port` (0: any free one; a restarted agent reuses the port it had).
async fn start_agent(data_dir: &std::path::Path, port: u16) -> drover_agent::AgentHandle {
    drover_agent::start(drover_agent::AgentOptions {
        data_dir: data_dir.to_owned(),
        config: config(&[
            ("agent.control_port", &port.to_string()),
            ("agent.transfer_port", "0"),
            ("agent.bind_address", "127.0.0.1"),
        ]),
        driver: Arc::new(QemuDriver::new(QemuConfig::default())),
        enrollment_code: None,
        roles: vec!["host".to_owned()],
    })
    .await
    .expect("agent starts")
}

/// A server and an agent on loopback, each on a fresh data directory, and a logged-in client.
struct Setup {
    server: drover_server::ServerHandle,
    agent: drover_agent::AgentHandle,
    api: Api,
    tls: rustls::ClientConfig,
    address: String,
    code: String,
    agent_dir: tempfile::TempDir,
    _server_dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let server_dir = tempfile::tempdir().expect("temp dir");
    let agent_dir = tempfile::tempdir().expect("temp dir");
    let server = drover_server::start(drover_server::ServerOptions {
        data_dir: server_dir.path().to_owned(),
        config: config(&[
            ("server.api_port", "0"),
            ("server.bind_address", "127.0.0.1"),
        ]),
        admin_password: Some("secret".to_owned()),
    })
    .await
    .expect("server starts");
    let agent = start_agent(agent_dir.path(), 0).await;
    let code = agent
        .enrollment_code
        .clone()
        .expect("a fresh agent has a code");
    let address = format!("127.0.0.1:{}", agent.control_addr.port());

    let tls = drover_tls::client_config(&server.ca_pem, None).expect("tls");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .build()
        .expect("client");
    let port = server.api_addr.port();
    let login: drover_api::auth::LoginResponse = client
        .post(format!("https://localhost:{port}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "secret"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    let api = Api {
        client,
        base: format!("https://localhost:{port}/api/v1"),
        token: login.token,
    };
    Setup {
        server,
        agent,
        api,
        tls,
        address,
        code,
        agent_dir,
        _server_dir: server_dir,
    }
}

impl Setup {
    /// A WebSocket to `/api/v1/{path}` with the admin's token.
    async fn websocket(
        &self,
        path: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let port = self.server.api_addr.port();
        let mut request = format!("wss://localhost:{port}/api/v1/{path}")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.api.token)
                .parse()
                .expect("header"),
        );
        let connector = tokio_tungstenite::Connector::Rustls(Arc::new(self.tls.clone()));
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .unwrap_or_else(|error| panic!("WebSocket to {path}: {error}"));
        stream
    }

    async fn shutdown(self) {
        self.agent.shutdown().await;
        self.server.shutdown().await;
    }

    async fn add_host(&self) {
        let body = json!({"address": self.address, "enrollment_code": self.code, "name": "local"});
        let added = self
            .api
            .job(
                reqwest::Method::POST,
                "/hosts",
                Some(body),
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(added.status, JobStatus::Completed, "{added:?}");
    }
}

fn tiny_vm(name: &str, cmdline: &str, start: bool) -> serde_json::Value {
    let guest = drover_testkit::guest();
    json!({
        "name": name, "host": "local", "cpus": 1, "memory_mib": 128, "disk": {"kind": "none"},
        "kernel": guest.kernel, "initrd": guest.initrd, "cmdline": cmdline, "start": start,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_add_vm_lifecycle_and_guest_poweroff_seen_within_a_second() {
    let setup = setup().await;
    let api = &setup.api;

    let wrong_code =
        json!({"address": setup.address, "enrollment_code": "not-the-code", "name": "local"});
    let wrong = api
        .job(
            reqwest::Method::POST,
            "/hosts",
            Some(wrong_code),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(wrong.status, JobStatus::Failed);
    assert_eq!(
        wrong.error.as_ref().map(|e| e.code.as_str()),
        Some("enrollment_code_invalid")
    );
    let (status, _) = api.call(reqwest::Method::GET, "/hosts/local", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a failed enrollment leaves no host"
    );
    setup.add_host().await;

    let create = tiny_vm("tiny1", "console=ttyS0 quiet tiny.shell=1", true);
    let created = api
        .job(
            reqwest::Method::POST,
            "/vms",
            Some(create),
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(created.status, JobStatus::Completed, "{created:?}");
    let vm = api.vm("tiny1").await.expect("the VM exists");
    assert_eq!(vm.state, VmState::Running);

    let serial_log = setup
        .agent_dir
        .path()
        .join("vms")
        .join(vm.id.to_string())
        .join("serial.log");
    drover_testkit::wait_for_text(&serial_log, "TINYVM-READY", Duration::from_secs(60))
        .await
        .expect("the guest boots");

    let mut console = setup.websocket("vms/tiny1/console").await;
    console
        .send(Message::Binary(
            "\npoweroff -f\n".as_bytes().to_vec().into(),
        ))
        .await
        .expect("type into the console");
    let sent = Instant::now();
    let stopped = drover_testkit::wait_until(
        "the VM to show Stopped",
        Duration::from_secs(10),
        async || {
            api.vm("tiny1")
                .await
                .filter(|vm| vm.state == VmState::Stopped)
        },
    )
    .await
    .expect("the guest's power-off shows");
    let latency = sent.elapsed();
    println!("guest power-off visible through the API after {latency:?}");
    assert!(
        latency < Duration::from_secs(1),
        "Stopped after {latency:?}: {stopped:?}"
    );
    drop(console);

    let deleted = api
        .job(
            reqwest::Method::DELETE,
            "/vms/tiny1",
            None,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(deleted.status, JobStatus::Completed, "{deleted:?}");
    assert!(api.vm("tiny1").await.is_none());
    assert!(
        !serial_log.parent().expect("vm dir").exists(),
        "the agent removed the VM's files"
    );
    let removed = api
        .job(
            reqwest::Method::DELETE,
            "/hosts/local",
            None,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(removed.status, JobStatus::Completed, "{removed:?}");
    setup.shutdown().await;
}

/// Ten creates and ten starts sent at once against one host: every job succeeds (work on one VM
/// is queued behind its create, work on different VMs runs in parallel, nothing is "locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_creates_and_starts_on_one_host_all_succeed() {
    let setup = setup().await;
    setup.add_host().await;
    let api = &setup.api;
    let names: Vec<String> = (0..10).map(|index| format!("many{index}")).collect();
    let submit_all = names.iter().map(|name| async move {
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                "/vms",
                Some(tiny_vm(name, "console=ttyS0 quiet", false)),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
        let (status, body) = api
            .call(
                reqwest::Method::POST,
                &format!("/vms/{name}/actions"),
                Some(json!({"action": "start"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "start {name}: {body}");
    });
    futures_util::future::join_all(submit_all).await;
    for name in &names {
        drover_testkit::wait_until(
            &format!("{name} running"),
            Duration::from_secs(120),
            async || api.vm(name).await.filter(|vm| vm.state == VmState::Running),
        )
        .await
        .expect("every VM runs");
    }
    let (_, jobs) = api
        .call(reqwest::Method::GET, "/jobs?limit=100", None)
        .await;
    let jobs: Vec<Job> = serde_json::from_value(jobs["items"].clone()).expect("jobs");
    let vm_jobs: Vec<&Job> = jobs
        .iter()
        .filter(|job| job.kind.starts_with("vm."))
        .collect();
    assert_eq!(vm_jobs.len(), 20);
    assert!(
        vm_jobs.iter().all(|job| job.status == JobStatus::Completed),
        "{vm_jobs:#?}"
    );
    for name in &names {
        let deleted = api
            .job(
                reqwest::Method::DELETE,
                &format!("/vms/{name}"),
                None,
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(deleted.status, JobStatus::Completed, "{deleted:?}");
    }
    setup.shutdown().await;
}

/// An agent that goes away makes its host Not Responding and its VMs Unknown (not Stopped); when
/// it comes back at the same address the supervisor reconnects and the snapshot restores the
/// truth. Every change also reaches the events WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_means_unknown_vms_until_it_returns() {
    let setup = setup().await;
    setup.add_host().await;
    let api = &setup.api;
    let mut events = setup.websocket("events").await;

    let created = api
        .job(
            reqwest::Method::POST,
            "/vms",
            Some(tiny_vm("idle1", "console=ttyS0 quiet", false)),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(created.status, JobStatus::Completed, "{created:?}");
    assert_eq!(
        api.vm("idle1").await.map(|vm| vm.state),
        Some(VmState::Stopped)
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut events).await {
            let Message::Text(text) = message else {
                continue;
            };
            let event: drover_api::Event =
                serde_json::from_str(text.as_str()).expect("events are JSON");
            if let drover_api::Event::VmChanged(vm) = event
                && vm.name == "idle1"
                && vm.state == VmState::Stopped
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen.ok(),
        Some(true),
        "the create's state changes reach the events stream"
    );

    let agent_port: u16 = setup
        .address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("port");
    let Setup {
        server,
        agent,
        api,
        agent_dir,
        _server_dir,
        ..
    } = setup;
    agent.shutdown().await;
    let unknown = drover_testkit::wait_until(
        "the VM to be Unknown",
        Duration::from_secs(15),
        async || {
            api.vm("idle1")
                .await
                .filter(|vm| vm.state == VmState::Unknown)
        },
    )
    .await
    .expect("a lost host's VMs are Unknown");
    assert_eq!(unknown.state_reason.as_deref(), Some("host not responding"));
    let (_, host) = api.call(reqwest::Method::GET, "/hosts/local", None).await;
    assert_eq!(host["state"], "not_responding");
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/vms/idle1/actions",
            Some(json!({"action": "start"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "host_not_responding");

    let agent = start_agent(agent_dir.path(), agent_port).await;
    drover_testkit::wait_until(
        "the VM to be Stopped again",
        Duration::from_secs(15),
        async || {
            api.vm("idle1")
                .await
                .filter(|vm| vm.state == VmState::Stopped)
        },
    )
    .await
    .expect("the reconnect's snapshot restores the state");
    let (_, host) = api.call(reqwest::Method::GET, "/hosts/local", None).await;
    assert_eq!(host["state"], "responding");
    let deleted = api
        .job(
            reqwest::Method::DELETE,
            "/vms/idle1",
            None,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(deleted.status, JobStatus::Completed, "{deleted:?}");
    agent.shutdown().await;
    server.shutdown().await;
}

/// A VM of `memory_mib` with no disk that is never started, placed by the server in `group`.
fn placed_vm(name: &str, group: &str, memory_mib: u64) -> serde_json::Value {
    json!({"name": name, "group": group, "cpus": 1, "memory_mib": memory_mib, "disk": {"kind": "none"}})
}

/// Two real agents in one group: placement picks the host with more room and the create job's
/// first step carries every host's rating; a host in maintenance rates 0 and gets nothing; 50
/// creates sent at once fill both hosts exactly to their reserves and not one VM beyond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_picks_the_roomier_host_and_fifty_creates_never_overcommit() {
    let setup = setup().await;
    setup.add_host().await;
    let api = &setup.api;
    let second_dir = tempfile::tempdir().expect("temp dir");
    let second = start_agent(second_dir.path(), 0).await;
    let enroll = json!({
        "address": format!("127.0.0.1:{}", second.control_addr.port()),
        "enrollment_code": second.enrollment_code.clone().expect("a code"),
        "name": "second",
    });
    let added = api
        .job(
            reqwest::Method::POST,
            "/hosts",
            Some(enroll),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(added.status, JobStatus::Completed, "{added:?}");

    // Both agents report this machine's memory; the group's reserve leaves 10 VMs of 128 MiB
    // on each.
    const VM_MIB: u64 = 128;
    let (_, local) = api.call(reqwest::Method::GET, "/hosts/local", None).await;
    let total_mib = local["memory_mib"].as_u64().expect("memory");
    let reserve = total_mib - 10 * VM_MIB;
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            "/hostgroups",
            Some(json!({"name": "pool", "settings": {"reserve_memory_mib": reserve}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for host in ["local", "second"] {
        let moved = api
            .job(
                reqwest::Method::POST,
                &format!("/hosts/{host}/move"),
                Some(json!({"group": "pool"})),
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(moved.status, JobStatus::Completed, "{moved:?}");
    }

    // 4 VMs' worth on local by name: second has more room, so placement picks it.
    let mut explicit = placed_vm("big-on-local", "pool", 4 * VM_MIB);
    explicit["host"] = json!("local");
    explicit.as_object_mut().expect("an object").remove("group");
    let created = api
        .job(
            reqwest::Method::POST,
            "/vms",
            Some(explicit),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(created.status, JobStatus::Completed, "{created:?}");
    let (status, rated) = api
        .call(
            reqwest::Method::POST,
            "/placement/rate",
            Some(json!({"cpus": 1, "memory_mib": VM_MIB, "group": "pool"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rated}");
    assert_eq!(rated["ratings"][0]["host_name"], "second", "{rated}");
    assert!(
        rated["ratings"][0]["rating"].as_f64() > rated["ratings"][1]["rating"].as_f64(),
        "{rated}"
    );
    let placed = api
        .job(
            reqwest::Method::POST,
            "/vms",
            Some(placed_vm("placed1", "pool", VM_MIB)),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(placed.status, JobStatus::Completed, "{placed:?}");
    assert_eq!(placed.description, "Create VM placed1 on host second");
    let ratings = placed.steps[0].detail.clone().unwrap_or_default();
    assert_eq!(placed.steps[0].name, "Rate hosts and place the VM");
    assert!(
        ratings.contains("second") && ratings.contains("(chosen)") && ratings.contains("local"),
        "{ratings}"
    );
    assert!(ratings.contains("memory: "), "{ratings}");

    // Maintenance: second rates 0 with the reason, and the next VM goes to local.
    let on = api
        .job(
            reqwest::Method::POST,
            "/hosts/second/maintenance",
            Some(json!({"enabled": true})),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(on.status, JobStatus::Completed, "{on:?}");
    let (_, rated) = api
        .call(
            reqwest::Method::POST,
            "/placement/rate",
            Some(json!({"cpus": 1, "memory_mib": VM_MIB, "group": "pool"})),
        )
        .await;
    let second_rating = rated["ratings"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["host_name"] == "second"))
        .cloned()
        .expect("second is rated");
    assert_eq!(second_rating["rating"], 0.0, "{second_rating}");
    assert!(
        second_rating["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("maintenance"))
    );
    // The heartbeat must not bring a host out of maintenance.
    tokio::time::sleep(Duration::from_secs(
        drover_api::agent::HEARTBEAT_SECONDS + 1,
    ))
    .await;
    let (_, host) = api.call(reqwest::Method::GET, "/hosts/second", None).await;
    assert_eq!(host["state"], "maintenance", "{host}");
    let placed = api
        .job(
            reqwest::Method::POST,
            "/vms",
            Some(placed_vm("placed2", "pool", VM_MIB)),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(placed.description, "Create VM placed2 on host local");
    let off = api
        .job(
            reqwest::Method::POST,
            "/hosts/second/maintenance",
            Some(json!({"enabled": false})),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(off.status, JobStatus::Completed, "{off:?}");

    // Room left: local 10 - 4 - 1 = 5 VMs, second 10 - 1 = 9 VMs. 50 creates at once.
    let names: Vec<String> = (0..50).map(|index| format!("rush{index}")).collect();
    let answers = futures_util::future::join_all(names.iter().map(|name| async move {
        api.call(
            reqwest::Method::POST,
            "/vms",
            Some(placed_vm(name, "pool", VM_MIB)),
        )
        .await
    }))
    .await;
    let accepted: Vec<Job> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::ACCEPTED)
        .map(|(_, body)| serde_json::from_value(body.clone()).expect("a job"))
        .collect();
    let refused: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|(status, _)| *status != StatusCode::ACCEPTED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted.len(), 14, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|body| body["error"]["code"] == "no_suitable_host"),
        "{refused:#?}"
    );
    for job in &accepted {
        drover_testkit::wait_until("create to end", Duration::from_secs(60), async || {
            let (_, body) = api
                .call(reqwest::Method::GET, &format!("/jobs/{}", job.id), None)
                .await;
            let job: Job = serde_json::from_value(body).ok()?;
            job.status.is_finished().then_some(job)
        })
        .await
        .ok()
        .filter(|job| job.status == JobStatus::Completed)
        .expect("every accepted create completes");
    }
    for host in ["local", "second"] {
        let (_, page) = api
            .call(
                reqwest::Method::GET,
                &format!("/vms?host={host}&limit=500"),
                None,
            )
            .await;
        let vms: Vec<Vm> = serde_json::from_value(page["items"].clone()).expect("VMs");
        let claimed: u64 = vms.iter().map(|vm| vm.memory_mib).sum();
        assert_eq!(
            claimed,
            10 * VM_MIB,
            "{host} is full to its reserve, not beyond"
        );
    }
    second.shutdown().await;
    setup.shutdown().await;
}
