//! The client against a stand-in server on 127.0.0.1 with a certificate from a built-in CA:
//! trust on first use, bearer tokens, paging, error bodies and job following. The real server
//! is exercised by the end-to-end tests of the `drover` crate.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use drover_api::auth::{LoginRequest, LoginResponse};
use drover_api::{
    ErrorBody, ErrorDetail, HostId, Job, JobId, JobStatus, JobTarget, Page, Vm, VmDisk, VmId,
    VmState,
};
use drover_client::{Client, VmFilter};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

const TOKEN: &str = "good-token";

struct StandIn {
    job_polls: AtomicU8,
}

fn error(status: StatusCode, code: &str) -> Response {
    let body = ErrorBody::from(ErrorDetail::new(code, "refused", "do something else"));
    (status, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"))
}

async fn login(Json(request): Json<LoginRequest>) -> Response {
    if request.password != "secret" {
        return error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    Json(LoginResponse {
        token: TOKEN.to_owned(),
        expires_at: chrono::Utc::now(),
        username: request.username,
    })
    .into_response()
}

fn vm(name: String) -> Vm {
    Vm {
        id: VmId::new(),
        name,
        host_id: HostId::new(),
        host_name: "h1".to_owned(),
        state: VmState::Running,
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
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

/// VMs `vm-000` .. `vm-249` on host `h1`, in pages of at most 100, the cursor being the next
/// index; the `host` and `state` filters must arrive as query parameters.
async fn list_vms(headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let host_matches = query.get("host").is_none_or(|host| host == "h1");
    let state_matches = query.get("state").is_none_or(|state| state == "running");
    let count = if host_matches && state_matches {
        250
    } else {
        0
    };
    let start: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = (start + 100).min(count);
    let page = Page {
        items: (start..end).map(|i| vm(format!("vm-{i:03}"))).collect(),
        next_cursor: (end < count).then(|| end.to_string()),
    };
    Json(page).into_response()
}

fn job(id: JobId, status: JobStatus, progress: u8) -> Job {
    Job {
        id,
        kind: "vm.start".to_owned(),
        description: "Start VM web1".to_owned(),
        target: JobTarget {
            kind: "vm".to_owned(),
            id: "web1".to_owned(),
            name: "web1".to_owned(),
        },
        status,
        progress,
        steps: Vec::new(),
        error: None,
        owner: "admin".to_owned(),
        restarted_from: None,
        created_at: chrono::Utc::now(),
        started_at: None,
        ended_at: None,
    }
}

/// Running at 50 % for the first two polls, then Completed.
async fn get_job(State(state): State<Arc<StandIn>>, Path(id): Path<JobId>) -> Json<Job> {
    let polls = state.job_polls.fetch_add(1, Ordering::SeqCst);
    let mut answer = job(id, JobStatus::Running, 50);
    if polls >= 2 {
        answer.status = JobStatus::Completed;
        answer.progress = 100;
    }
    answer.created_at = chrono::DateTime::UNIX_EPOCH;
    Json(answer)
}

struct Server {
    url: String,
    ca_pem: String,
    handle: axum_server::Handle,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn stand_in_server() -> Server {
    let ca = drover_tls::CertificateAuthority::generate("test CA").expect("CA");
    let identity = ca
        .issue(
            "localhost",
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
        )
        .expect("server certificate");
    let tls = drover_tls::server_config(&identity, None).expect("server TLS config");
    let state = Arc::new(StandIn {
        job_polls: AtomicU8::new(0),
    });
    let app = Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/vms", get(list_vms))
        .route("/api/v1/jobs/{id}", get(get_job))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found") })
        .with_state(state);
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(
        "127.0.0.1:0".parse().expect("address"),
        RustlsConfig::from_config(Arc::new(tls)),
    )
    .handle(handle.clone());
    tokio::spawn(server.serve(app.into_make_service()));
    let address = handle.listening().await.expect("the stand-in listens");
    Server {
        url: format!("https://127.0.0.1:{}", address.port()),
        ca_pem: ca.cert_pem().to_owned(),
        handle,
    }
}

#[tokio::test]
async fn first_use_shows_the_ca_of_the_presented_chain() {
    let server = stand_in_server().await;
    let presented = drover_client::fetch_server_ca(&server.url)
        .await
        .expect("fetch CA");
    assert_eq!(presented.ca_pem.trim(), server.ca_pem.trim());
    assert_eq!(
        presented.fingerprint,
        drover_tls::pem_fingerprint(&server.ca_pem).expect("fingerprint")
    );
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_ca() {
    let server = stand_in_server().await;
    let other_ca = drover_tls::CertificateAuthority::generate("other").expect("CA");
    let client = Client::new(&server.url, None, other_ca.cert_pem()).expect("client");
    let error = client
        .login("admin", "secret", None)
        .await
        .expect_err("an untrusted server is refused");
    assert_eq!(error.code(), "server_unreachable");
}

#[tokio::test]
async fn login_then_page_through_all_vms() {
    let server = stand_in_server().await;
    let anonymous = Client::new(&server.url, None, &server.ca_pem).expect("client");

    let refused = anonymous
        .login("admin", "wrong", None)
        .await
        .expect_err("wrong password");
    let detail = refused.detail();
    assert_eq!(detail.code, "invalid_credentials");
    assert_eq!(detail.action, "do something else");

    let unauthenticated = anonymous
        .list_vms(&VmFilter::default(), &Default::default())
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), "unauthenticated");

    let login = anonymous
        .login("admin", "secret", Some(60))
        .await
        .expect("login");
    let client = anonymous.with_token(login.token);
    let first = client
        .list_vms(&VmFilter::default(), &Default::default())
        .await
        .expect("first page");
    assert_eq!(first.items.len(), 100);
    assert_eq!(first.next_cursor.as_deref(), Some("100"));

    let all = client
        .all_vms(&VmFilter::default())
        .await
        .expect("all pages");
    let names: Vec<String> = all.into_iter().map(|vm| vm.name).collect();
    let expected: Vec<String> = (0..250).map(|i| format!("vm-{i:03}")).collect();
    assert_eq!(names, expected);

    let elsewhere = VmFilter {
        host: Some("h2".to_owned()),
        state: None,
    };
    assert!(
        client
            .all_vms(&elsewhere)
            .await
            .expect("filtered")
            .is_empty()
    );
    let stopped = VmFilter {
        host: Some("h1".to_owned()),
        state: Some(VmState::Stopped),
    };
    assert!(client.all_vms(&stopped).await.expect("filtered").is_empty());
}

#[tokio::test]
async fn wait_for_job_reports_each_change_until_finished() {
    let server = stand_in_server().await;
    let client = Client::new(&server.url, Some(TOKEN.to_owned()), &server.ca_pem).expect("client");
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.wait_for_job(JobId::new(), |job| seen.push((job.status, job.progress))),
    )
    .await
    .expect("the job finishes within 10 s")
    .expect("wait");
    assert_eq!(finished.status, JobStatus::Completed);
    assert_eq!(
        seen,
        vec![(JobStatus::Running, 50), (JobStatus::Completed, 100)],
        "unchanged polls are not reported"
    );
}

#[tokio::test]
async fn unknown_routes_give_the_error_body() {
    let server = stand_in_server().await;
    let client = Client::new(&server.url, Some(TOKEN.to_owned()), &server.ca_pem).expect("client");
    let error = client.host("nope").await.expect_err("no such route here");
    match error {
        drover_client::ClientError::Api { status, detail } => {
            assert_eq!(status, 404);
            assert_eq!(detail.code, "not_found");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}
