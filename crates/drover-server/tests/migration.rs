//! Component tests of `POST /api/v1/vms/{vm}/migrate`: every request that cannot run is refused
//! at once with its code, and no job is made (host rows inserted directly, no agent behind them).

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host, vm_row};
use drover_api::{CheckpointId, Host, VmId, VmState};
use serde_json::json;

async fn vm_on(server: &TestServer, host: &Host, name: &str, state: VmState) -> VmId {
    let vm = vm_row(host, name, state);
    drover_server::db::vms::insert(&server.state.db, &vm)
        .await
        .expect("vm row");
    vm.id
}

#[tokio::test]
async fn migrations_that_cannot_run_are_refused_before_any_job() {
    let server = TestServer::new().await;
    let kvm1 = insert_host(&server.state, "kvm1", 2, 2048).await;
    let kvm2 = insert_host(&server.state, "kvm2", 2, 2048).await;
    vm_on(&server, &kvm1, "web1", VmState::Running).await;
    vm_on(&server, &kvm1, "held", VmState::Migrating).await;
    let kept = vm_on(&server, &kvm1, "kept", VmState::Running).await;
    drover_server::db::checkpoints::insert(&server.state.db, CheckpointId::new(), kept, "c1", true)
        .await
        .expect("checkpoint row");
    drover_server::db::hosts::set_maintenance(&server.state.db, kvm2.id, true)
        .await
        .expect("maintenance");

    let cases = [
        (
            "nobody",
            json!({"to": "kvm2"}),
            StatusCode::NOT_FOUND,
            "vm_not_found",
        ),
        (
            "web1",
            json!({"to": "kvm9"}),
            StatusCode::NOT_FOUND,
            "host_not_found",
        ),
        (
            "web1",
            json!({"to": "kvm1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_migration_target",
        ),
        (
            "web1",
            json!({"to": "kvm2"}),
            StatusCode::CONFLICT,
            "host_in_maintenance",
        ),
        ("web1", json!({}), StatusCode::CONFLICT, "no_suitable_host"),
        (
            "held",
            json!({"to": "kvm2"}),
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            "kept",
            json!({"to": "kvm2"}),
            StatusCode::CONFLICT,
            "vm_not_movable",
        ),
        (
            "web1",
            json!({"to": 7}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (vm, body, status, code) in cases {
        let answer = server
            .call(
                Method::POST,
                &format!("/api/v1/vms/{vm}/migrate"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(answer.status, status, "{vm} {body}: {}", answer.body);
        assert_eq!(error_code(&answer), code, "{vm} {body}");
    }
    let kept = server
        .call(
            Method::POST,
            "/api/v1/vms/kept/migrate",
            Some(json!({"to": "kvm1"})),
        )
        .await;
    let action = kept.body["error"]["action"].as_str().unwrap_or_default();
    assert!(
        action.contains("stop the VM and migrate it stopped")
            && action.contains("checkpoint delete"),
        "{}",
        kept.body
    );
    let jobs = server.call(Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(jobs.body["items"], json!([]), "no job was made");
    let web1 = server.call(Method::GET, "/api/v1/vms/web1", None).await;
    assert_eq!(
        (web1.body["host_name"].as_str(), web1.body["state"].as_str()),
        (Some("kvm1"), Some("running"))
    );
}

/// The memory the host's VMs and migrations claim, as placement reads it.
async fn claimed_memory(server: &TestServer, host: &Host) -> u64 {
    drover_server::db::placement::facts(&server.state.db)
        .await
        .expect("facts")
        .into_iter()
        .find(|(facts, _)| facts.id == host.id)
        .map(|(facts, _)| facts.claimed.memory_mib)
        .expect("the host")
}

#[tokio::test]
async fn concurrent_migrations_claim_the_destination_at_start() {
    use drover_server::db::migration::{claim_destination, move_to_host, release_destination};
    use drover_server::db::placement::Reserves;
    let server = TestServer::new().await;
    let db = &server.state.db;
    let source = insert_host(&server.state, "src", 2, 4096).await;
    let destination = insert_host(&server.state, "dst", 2, 2048).await;
    let mut ids = Vec::new();
    for name in ["big1", "big2"] {
        let mut vm = vm_row(&source, name, VmState::Running);
        vm.memory_mib = 1200;
        drover_server::db::vms::insert(db, &vm)
            .await
            .expect("vm row");
        ids.push(vm.id);
    }
    let none = Reserves {
        memory_mib: 0,
        disk_bytes: 0,
    };
    assert!(
        claim_destination(db, ids[0], destination.id, none)
            .await
            .expect("claim")
    );
    assert_eq!(claimed_memory(&server, &destination).await, 1200);
    assert!(
        !claim_destination(db, ids[1], destination.id, none)
            .await
            .expect("claim"),
        "two 1200 MiB VMs do not fit in 2048 MiB"
    );
    // A failed migration gives its claim back; the other one may start then.
    release_destination(db, ids[0]).await.expect("release");
    assert_eq!(claimed_memory(&server, &destination).await, 0);
    assert!(
        claim_destination(db, ids[1], destination.id, none)
            .await
            .expect("claim")
    );
    // At the switch the VM's own claim replaces the migration's: counted once.
    move_to_host(db, ids[1], source.id, destination.id, VmState::Running)
        .await
        .expect("move")
        .expect("moved");
    assert_eq!(claimed_memory(&server, &destination).await, 1200);
    assert_eq!(claimed_memory(&server, &source).await, 1200);
    release_destination(db, ids[1]).await.expect("release");
    assert_eq!(claimed_memory(&server, &destination).await, 1200);
}
