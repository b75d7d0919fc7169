//! Shared by the component tests: a server state on a fresh temp data directory, a logged-in
//! token, and requests sent through the router in-process.

#![allow(dead_code)] // each test binary uses part of these helpers

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::Utc;
use drover_api::{Accelerator, Host, HostId, HostState, Vm, VmDisk, VmId, VmState};
use drover_server::AppState;
use serde_json::Value;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub token: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestServer {
    pub async fn new() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = AppState::open(dir.path()).await.expect("state opens");
        drover_server::http::ensure_admin(&state.db, Some(PASSWORD.to_owned()))
            .await
            .expect("admin created");
        let token = drover_server::http::issue_token(
            &state.db,
            "admin",
            Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .expect("token");
        TestServer { dir, state, token }
    }

    /// Submits a job (`202`) and waits for it to end.
    pub async fn job(&self, method: Method, path: &str, body: Option<Value>) -> drover_api::Job {
        let answer = self.call(method, path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{path}: {}",
            answer.body
        );
        let job: drover_api::Job = serde_json::from_value(answer.body).expect("a job");
        drover_testkit::wait_until(
            "job to end",
            std::time::Duration::from_secs(30),
            async || {
                let answer = self
                    .call(Method::GET, &format!("/api/v1/jobs/{}", job.id), None)
                    .await;
                let job: drover_api::Job = serde_json::from_value(answer.body).ok()?;
                job.status.is_finished().then_some(job)
            },
        )
        .await
        .expect("the job ends")
    }

    /// [`TestServer::job`] as the JSON the API shows.
    pub async fn job_json(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        serde_json::to_value(self.job(method, path, body).await).expect("job JSON")
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let bearer = format!("Bearer {}", self.token);
        send(
            &self.state,
            method,
            path,
            Some(&bearer),
            body.map(|b| b.to_string()),
        )
        .await
    }
}

/// Sends one request through a fresh router over `state`.
pub async fn send(
    state: &AppState,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<String>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request builds");
    let response = drover_server::router(state.clone())
        .oneshot(request)
        .await
        .expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body reads");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Asserts the API's error shape and returns its code.
pub fn error_code(answer: &Answer) -> String {
    let error = &answer.body["error"];
    for field in ["code", "message", "action"] {
        assert!(
            error[field].as_str().is_some_and(|text| !text.is_empty()),
            "error body lacks {field}: {}",
            answer.body
        );
    }
    error["code"].as_str().unwrap_or_default().to_owned()
}

/// Inserts a Responding host row directly (no agent behind it).
pub async fn insert_host(state: &AppState, name: &str, cpus: u32, memory_mib: u64) -> Host {
    let id = HostId::new();
    // Port 1 is never an agent: a supervisor started for this row finds nobody there.
    let host = Host {
        id,
        name: name.to_owned(),
        address: format!("{name}.invalid:1"),
        state: HostState::Responding,
        state_reason: None,
        cpus,
        memory_mib,
        memory_free_mib: memory_mib,
        disk_free_bytes: 1 << 30,
        cpu_load_percent: 0,
        accelerator: Accelerator::Tcg,
        agent_version: drover_api::VERSION.to_owned(),
        vm_count: 0,
        group_id: drover_server::db::hostgroups::root_id(),
        group_name: drover_api::hostgroup::ROOT_GROUP_NAME.to_owned(),
        last_seen: Some(Utc::now()),
        created_at: Utc::now(),
    };
    let inserted = drover_server::db::hosts::insert(&state.db, &host)
        .await
        .expect("host row");
    assert!(inserted, "the root group exists");
    host
}

/// A VM row on `host` without a disk, for inserting directly (no agent behind it).
pub fn vm_row(host: &drover_api::Host, name: &str, state: VmState) -> Vm {
    Vm {
        id: VmId::new(),
        name: name.to_owned(),
        host_id: host.id,
        host_name: host.name.clone(),
        state,
        state_reason: None,
        cpus: 1,
        memory_mib: 128,
        disk: VmDisk::None,
        kernel: None,
        initrd: None,
        cmdline: None,
        nics: vec![],
        port_forwards: vec![],
        devices: Default::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}
