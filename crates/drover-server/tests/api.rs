//! Component tests of the REST API: the router called in-process on a fresh data directory per
//! test, with host rows inserted directly where a test needs one (no agent behind them).

mod common;

use axum::http::{Method, StatusCode};
use chrono::Utc;
use common::{TestServer, error_code, insert_host, send, vm_row};
use drover_api::{Job, JobStatus, JobTarget, VmId, VmState};
use drover_server::jobs::JobSpec;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn login_good_bad_and_expired() {
    let server = TestServer::new().await;
    let login = |password: &str| {
        json!({"username": "admin", "password": password, "ttl_seconds": 60}).to_string()
    };
    let good = send(
        &server.state,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(login(common::PASSWORD)),
    )
    .await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.body);
    assert_eq!(good.body["username"], "admin");
    let token = good.body["token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    let bearer = format!("Bearer {token}");
    let hosts = send(
        &server.state,
        Method::GET,
        "/api/v1/hosts",
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(hosts.status, StatusCode::OK);

    let bad = send(
        &server.state,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(login("wrong")),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&bad), "invalid_credentials");

    let expired = drover_server::http::issue_token(
        &server.state.db,
        "admin",
        Utc::now() - chrono::Duration::seconds(1),
    )
    .await
    .expect("token");
    let answer = send(
        &server.state,
        Method::GET,
        "/api/v1/vms",
        Some(&format!("Bearer {expired}")),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&answer), "token_expired");

    let unknown = send(
        &server.state,
        Method::GET,
        "/api/v1/vms",
        Some("Bearer 00ff"),
        None,
    )
    .await;
    assert_eq!(error_code(&unknown), "unauthenticated");
}

#[tokio::test]
async fn every_endpoint_needs_a_token() {
    let server = TestServer::new().await;
    let id = VmId::new();
    let routes = [
        (Method::GET, "/api/v1/hosts".to_owned()),
        (Method::POST, "/api/v1/hosts".to_owned()),
        (Method::GET, "/api/v1/hosts/kvm1".to_owned()),
        (Method::DELETE, "/api/v1/hosts/kvm1".to_owned()),
        (Method::GET, "/api/v1/vms".to_owned()),
        (Method::POST, "/api/v1/vms".to_owned()),
        (Method::GET, format!("/api/v1/vms/{id}")),
        (Method::DELETE, format!("/api/v1/vms/{id}")),
        (Method::POST, format!("/api/v1/vms/{id}/actions")),
        (Method::GET, format!("/api/v1/vms/{id}/console")),
        (Method::GET, "/api/v1/jobs".to_owned()),
        (Method::GET, format!("/api/v1/jobs/{id}")),
        (Method::POST, format!("/api/v1/jobs/{id}/cancel")),
        (Method::POST, format!("/api/v1/jobs/{id}/restart")),
        (Method::GET, "/api/v1/events".to_owned()),
        (Method::GET, "/api/v1/openapi.json".to_owned()),
    ];
    for (method, path) in routes {
        let answer = send(
            &server.state,
            method.clone(),
            &path,
            None,
            Some("{}".to_owned()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(error_code(&answer), "unauthenticated", "{method} {path}");
    }
}

#[tokio::test]
async fn malformed_json_and_unknown_routes_use_the_error_shape() {
    let server = TestServer::new().await;
    let bearer = format!("Bearer {}", server.token);
    for path in ["/api/v1/vms", "/api/v1/hosts", "/api/v1/auth/login"] {
        let answer = send(
            &server.state,
            Method::POST,
            path,
            Some(&bearer),
            Some("{not json".to_owned()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(error_code(&answer), "invalid_json", "{path}");
    }
    let missing_field = server
        .call(Method::POST, "/api/v1/vms", Some(json!({"name": "a"})))
        .await;
    assert_eq!(error_code(&missing_field), "invalid_json");

    let unknown = server
        .call(Method::GET, "/api/v1/no-such-thing", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&unknown), "not_found");
    let wrong_method = server.call(Method::PUT, "/api/v1/vms", None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&wrong_method), "method_not_allowed");
    let missing_vm = server.call(Method::GET, "/api/v1/vms/nope", None).await;
    assert_eq!(error_code(&missing_vm), "vm_not_found");
    let bad_filter = server
        .call(Method::GET, "/api/v1/vms?state=sleepy", None)
        .await;
    assert_eq!(error_code(&bad_filter), "invalid_query");
    let openapi = server.call(Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert!(
        openapi.body["paths"]["/api/v1/vms/{vm}/actions"].is_object(),
        "{}",
        openapi.body
    );
}

fn vm_request(name: &str, host: &str, cpus: u32, memory_mib: u64) -> serde_json::Value {
    json!({"name": name, "host": host, "cpus": cpus, "memory_mib": memory_mib, "disk": {"kind": "none"}})
}

#[tokio::test]
async fn bad_vm_creates_change_nothing() {
    let server = TestServer::new().await;
    insert_host(&server.state, "kvm1", 2, 2048).await;
    let cases = [
        (
            vm_request("bad name!", "kvm1", 1, 128),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            vm_request("web1", "nowhere", 1, 128),
            StatusCode::NOT_FOUND,
            "host_not_found",
        ),
        (
            vm_request("web1", "kvm1", 4, 128),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_host_resources",
        ),
        (
            vm_request("web1", "kvm1", 1, 4096),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_host_resources",
        ),
        (
            vm_request("web1", "kvm1", 0, 128),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_vm_spec",
        ),
        (
            vm_request("web1", "kvm1", 1, 32),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_vm_spec",
        ),
    ];
    for (body, status, code) in cases {
        let answer = server
            .call(Method::POST, "/api/v1/vms", Some(body.clone()))
            .await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(error_code(&answer), code, "{body}");
    }
    let too_big = server
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(vm_request("web1", "kvm1", 1, 4096)),
        )
        .await;
    let message = too_big.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("VM needs 4 GiB") && message.contains("1.8 GiB free after reserves"),
        "names the figures (2 GiB less the 256 MiB reserve of All Hosts): {message}"
    );

    let vms = server.call(Method::GET, "/api/v1/vms", None).await;
    assert_eq!(vms.body["items"], json!([]));
    let jobs = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(jobs.body["items"], json!([]));
}

#[tokio::test]
async fn bad_host_adds_are_refused_at_once() {
    let server = TestServer::new().await;
    let taken = insert_host(&server.state, "kvm1", 2, 2048).await;
    let cases = [
        (
            json!({"address": "no-port", "enrollment_code": "x"}),
            "invalid_address",
        ),
        (
            json!({"address": "a b:8101", "enrollment_code": "x"}),
            "invalid_address",
        ),
        (
            json!({"address": taken.address, "enrollment_code": "x"}),
            "host_exists",
        ),
        (
            json!({"address": "10.0.0.9:8101", "enrollment_code": "x", "name": "kvm1"}),
            "host_exists",
        ),
        (
            json!({"address": "10.0.0.9:8101", "enrollment_code": "x", "name": "-bad"}),
            "invalid_name",
        ),
    ];
    for (body, code) in cases {
        let answer = server
            .call(Method::POST, "/api/v1/hosts", Some(body.clone()))
            .await;
        assert!(answer.status.is_client_error(), "{body}");
        assert_eq!(error_code(&answer), code, "{body}");
    }
}

#[tokio::test]
async fn state_conflicts_and_hosts_with_vms() {
    let server = TestServer::new().await;
    let host = insert_host(&server.state, "kvm1", 2, 2048).await;
    let vm = vm_row(&host, "web1", VmState::Stopped);
    drover_server::db::vms::insert(&server.state.db, &vm)
        .await
        .expect("vm row");

    let pause = server
        .call(
            Method::POST,
            "/api/v1/vms/web1/actions",
            Some(json!({"action": "pause"})),
        )
        .await;
    assert_eq!(pause.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&pause), "vm_state_conflict");
    let console = server
        .call(Method::GET, "/api/v1/vms/web1/console", None)
        .await;
    assert_eq!(error_code(&console), "vm_not_running");
    let duplicate = server
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(vm_request("web1", "kvm1", 1, 128)),
        )
        .await;
    assert_eq!(error_code(&duplicate), "vm_exists");

    let remove = server
        .call(Method::DELETE, "/api/v1/hosts/kvm1", None)
        .await;
    assert_eq!(remove.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&remove), "host_has_vms");
    assert!(
        remove.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("web1")
    );
}

#[tokio::test]
async fn vm_list_pages_through_thousands_of_rows() {
    let server = TestServer::new().await;
    let kvm1 = insert_host(&server.state, "kvm1", 2, 2048).await;
    let kvm2 = insert_host(&server.state, "kvm2", 2, 2048).await;
    let total = 3000;
    for index in 0..total {
        let (host, state) = if index % 3 == 0 {
            (&kvm2, VmState::Running)
        } else {
            (&kvm1, VmState::Stopped)
        };
        let vm = vm_row(host, &format!("vm{index:05}"), state);
        drover_server::db::vms::insert(&server.state.db, &vm)
            .await
            .expect("vm row");
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/vms?limit=500".to_owned();
    for _page in 0..10 {
        let answer = server.call(Method::GET, &path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let items = answer.body["items"].as_array().expect("items").clone();
        assert!(items.len() <= 500);
        names.extend(
            items
                .iter()
                .map(|vm| vm["name"].as_str().unwrap_or_default().to_owned()),
        );
        match answer.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/vms?limit=500&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names.len(), total);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, names, "each VM once, in name order");

    let running = server
        .call(
            Method::GET,
            "/api/v1/vms?state=running&host=kvm2&limit=500",
            None,
        )
        .await;
    let items = running.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 500);
    assert!(
        items
            .iter()
            .all(|vm| vm["state"] == "running" && vm["host_name"] == "kvm2")
    );
    let on_kvm1_running = server
        .call(Method::GET, "/api/v1/vms?state=running&host=kvm1", None)
        .await;
    assert_eq!(on_kvm1_running.body["items"], json!([]));
    let bad_cursor = server
        .call(Method::GET, "/api/v1/vms?cursor=zz", None)
        .await;
    assert_eq!(error_code(&bad_cursor), "invalid_query");
}

#[tokio::test]
async fn jobs_on_one_target_queue_and_on_two_targets_overlap() {
    let server = TestServer::new().await;
    let engine = &server.state.engine;
    let target = |id: &str| JobTarget {
        kind: "vm".into(),
        id: id.into(),
        name: id.into(),
    };
    let first = engine.turn(&target("a")).await;
    let other_target =
        tokio::time::timeout(Duration::from_secs(1), engine.turn(&target("b"))).await;
    assert!(other_target.is_ok(), "another target's job runs alongside");
    let waiting = tokio::spawn({
        let state = server.state.clone();
        async move {
            let _turn = state
                .engine
                .turn(&JobTarget {
                    kind: "vm".into(),
                    id: "a".into(),
                    name: "a".into(),
                })
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "a second job on the same target waits"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting job gets its turn")
        .expect("task ends");
}

#[tokio::test]
async fn a_queued_job_can_be_canceled_and_never_runs() {
    let server = TestServer::new().await;
    let host = insert_host(&server.state, "kvm1", 2, 2048).await;
    let vm = vm_row(&host, "web1", VmState::Stopped);
    drover_server::db::vms::insert(&server.state.db, &vm)
        .await
        .expect("vm row");
    let held = server
        .state
        .engine
        .turn(&JobTarget {
            kind: "vm".into(),
            id: vm.id.to_string(),
            name: vm.name.clone(),
        })
        .await;
    let delete = server.call(Method::DELETE, "/api/v1/vms/web1", None).await;
    assert_eq!(delete.status, StatusCode::ACCEPTED, "{}", delete.body);
    let job: Job = serde_json::from_value(delete.body.clone()).expect("a job");
    assert_eq!(
        delete.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/jobs/{}", job.id).as_str())
    );
    assert_eq!(job.kind, "vm.delete");
    let canceled = server
        .call(
            Method::POST,
            &format!("/api/v1/jobs/{}/cancel", job.id),
            None,
        )
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let still_there = server.call(Method::GET, "/api/v1/vms/web1", None).await;
    assert_eq!(
        still_there.status,
        StatusCode::OK,
        "the canceled delete never ran"
    );
    let again = server
        .call(
            Method::POST,
            &format!("/api/v1/jobs/{}/cancel", job.id),
            None,
        )
        .await;
    assert_eq!(error_code(&again), "job_not_cancelable");
    let listed = server
        .call(Method::GET, "/api/v1/jobs?status=canceled", None)
        .await;
    assert_eq!(listed.body["items"][0]["id"], job.id.to_string());
}

#[tokio::test]
async fn jobs_survive_a_restart_as_failed_and_can_be_restarted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = drover_api::config::Config::default();
    config
        .set(
            "server.api_port",
            "0".into(),
            drover_api::config::Source::Default,
        )
        .expect("port");
    config
        .set(
            "server.bind_address",
            "127.0.0.1".into(),
            drover_api::config::Source::Default,
        )
        .expect("address");
    let options = drover_server::ServerOptions {
        data_dir: dir.path().to_owned(),
        config,
        admin_password: None,
    };
    let first = drover_server::start(options.clone())
        .await
        .expect("server starts");
    let password = first
        .initial_admin_password
        .clone()
        .expect("first start makes the admin");

    // The API speaks HTTPS with a certificate from the built-in CA.
    let tls = drover_tls::client_config(&first.ca_pem, None).expect("tls");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client");
    let login: drover_api::auth::LoginResponse = client
        .post(format!(
            "https://localhost:{}/api/v1/auth/login",
            first.api_addr.port()
        ))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login over https")
        .json()
        .await
        .expect("login answer");

    let host = insert_host(&first.state, "kvm1", 2, 2048).await;
    let spec = JobSpec::HostRemove { host_id: host.id };
    let interrupted = Job {
        id: drover_api::JobId::new(),
        kind: spec.kind(),
        description: "Remove host kvm1".into(),
        target: JobTarget {
            kind: "host".into(),
            id: host.id.to_string(),
            name: host.name.clone(),
        },
        status: JobStatus::Running,
        progress: 0,
        steps: Vec::new(),
        error: None,
        owner: "admin".into(),
        restarted_from: None,
        created_at: Utc::now(),
        started_at: Some(Utc::now()),
        ended_at: None,
    };
    let spec_json = serde_json::to_string(&spec).expect("spec");
    drover_server::db::jobs::insert(&first.state.db, &interrupted, &spec_json)
        .await
        .expect("job row");
    first.shutdown().await;

    let second = drover_server::start(options)
        .await
        .expect("server restarts");
    assert_eq!(
        second.initial_admin_password, None,
        "the admin exists already"
    );
    let base = format!("https://localhost:{}/api/v1", second.api_addr.port());
    let tls = drover_tls::client_config(&second.ca_pem, None).expect("tls");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("client");
    let get = |path: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(&login.token)
            .send()
    };
    let failed: Job = get(format!("/jobs/{}", interrupted.id))
        .await
        .expect("get")
        .json()
        .await
        .expect("job");
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(|e| e.code.as_str()),
        Some("server_restarted")
    );

    let restarted = client
        .post(format!("{base}/jobs/{}/restart", interrupted.id))
        .bearer_auth(&login.token)
        .send()
        .await
        .expect("restart");
    assert_eq!(restarted.status(), StatusCode::ACCEPTED);
    let restarted: Job = restarted.json().await.expect("job");
    assert_eq!(restarted.restarted_from, Some(interrupted.id));
    let finished = drover_testkit::wait_until(
        "the restarted job to finish",
        Duration::from_secs(10),
        async || {
            let job: Job = get(format!("/jobs/{}", restarted.id))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            job.status.is_finished().then_some(job)
        },
    )
    .await
    .expect("job finishes");
    assert_eq!(finished.status, JobStatus::Completed, "{finished:?}");
    let gone = get("/hosts/kvm1".to_owned()).await.expect("get host");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    second.shutdown().await;
}

/// Regression: jobs were spawned first and queued second, so two jobs submitted back to back on
/// one VM (create, then start) could run in the wrong order. A place is now taken at submission.
#[tokio::test]
async fn jobs_on_one_target_run_in_the_order_they_were_submitted() {
    let server = TestServer::new().await;
    let engine = &server.state.engine;
    let target = JobTarget {
        kind: "vm".into(),
        id: "ordered".into(),
        name: "ordered".into(),
    };
    let first = engine.enqueue(&target);
    let second = engine.enqueue(&target);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // The second job asks for its turn before the first does; it must still go second.
    let second_runs = tokio::spawn({
        let order = order.clone();
        async move {
            let _turn = second.turn().await;
            order.lock().expect("order").push("second");
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !second_runs.is_finished(),
        "the second job waits for the first"
    );
    {
        let _turn = first.turn().await;
        order.lock().expect("order").push("first");
    }
    tokio::time::timeout(Duration::from_secs(5), second_runs)
        .await
        .expect("the second job gets its turn")
        .expect("task ends");
    assert_eq!(*order.lock().expect("order"), vec!["first", "second"]);
}
