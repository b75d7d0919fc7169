//! Component tests of store and deploy: what the API refuses at once, and how a stored VM's
//! capacity claim leaves its host and comes back with a deploy (the database triggers).

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host, vm_row};
use drover_api::{Host, LibraryShareId, Vm, VmDisk, VmState};
use drover_server::db;
use drover_server::db::stored::StoredCopy;
use serde_json::json;

/// A 256 MiB VM with a 1 MiB blank disk, so that it claims capacity on its host.
fn stopped_vm(host: &Host, name: &str, state: VmState) -> Vm {
    Vm {
        memory_mib: 256,
        disk: VmDisk::Blank {
            size_bytes: 1 << 20,
        },
        ..vm_row(host, name, state)
    }
}

async fn claimed(server: &TestServer, host: &Host) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT claimed_vms, claimed_memory_mib, claimed_disk_bytes FROM hosts WHERE id = ?",
    )
    .bind(host.id.to_string())
    .fetch_one(server.state.db.pool())
    .await
    .expect("claims")
}

#[tokio::test]
async fn store_and_deploy_refuse_at_once_and_stored_vms_claim_nothing() {
    let server = TestServer::new().await;
    let kvm1 = insert_host(&server.state, "kvm1", 2, 4096).await;
    let library = insert_host(&server.state, "lib1", 2, 4096).await;
    let web1 = stopped_vm(&kvm1, "web1", VmState::Stopped);
    db::vms::insert(&server.state.db, &web1).await.expect("vm");
    db::vms::insert(
        &server.state.db,
        &stopped_vm(&kvm1, "run1", VmState::Running),
    )
    .await
    .expect("vm");
    let store = async |vm: &str, body| {
        let path = format!("/api/v1/vms/{vm}/store");
        server.call(Method::POST, &path, Some(body)).await
    };

    let answer = store("web1", json!({})).await;
    assert_eq!(
        (answer.status, error_code(&answer).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "share_required")
    );
    let share_id = LibraryShareId::new();
    db::library::insert_share(&server.state.db, share_id, "main", library.id, "/srv/lib")
        .await
        .expect("share");
    assert_eq!(error_code(&store("ghost", json!({})).await), "vm_not_found");
    assert_eq!(
        error_code(&store("web1", json!({"share": "nope"})).await),
        "share_not_found"
    );
    assert_eq!(
        error_code(&store("run1", json!({})).await),
        "vm_state_conflict"
    );
    let deploy = server
        .call(
            Method::POST,
            "/api/v1/vms/web1/deploy",
            Some(json!({"host": "kvm1"})),
        )
        .await;
    assert_eq!(error_code(&deploy), "vm_state_conflict");

    // Stored on the library server, the VM claims nothing there or on its old host.
    let before = claimed(&server, &kvm1).await;
    assert_eq!(before, (2, 512, 2 << 20));
    let copy = StoredCopy {
        share_id,
        files: vec![],
    };
    assert!(
        db::stored::mark_stored(&server.state.db, web1.id, library.id, &copy)
            .await
            .expect("store")
    );
    assert_eq!(claimed(&server, &kvm1).await, (1, 256, 1 << 20));
    assert_eq!(claimed(&server, &library).await, (0, 0, 0));
    assert_eq!(
        db::stored::stored_copy(&server.state.db, web1.id)
            .await
            .expect("copy"),
        Some(copy.clone())
    );
    let deploy = server
        .call(
            Method::POST,
            "/api/v1/vms/web1/deploy",
            Some(json!({"host": "kvm1", "group": "All Hosts"})),
        )
        .await;
    assert_eq!(error_code(&deploy), "invalid_vm_spec");

    // Deployed again, it claims on its new host only.
    let reserves = db::placement::Reserves {
        memory_mib: 0,
        disk_bytes: 0,
    };
    assert!(
        db::stored::claim_deployed(&server.state.db, web1.id, kvm1.id, reserves)
            .await
            .expect("deploy")
    );
    assert_eq!(claimed(&server, &kvm1).await, before);
    assert_eq!(claimed(&server, &library).await, (0, 0, 0));
    // A deleted stored VM gives back no claim it did not hold.
    assert!(
        db::stored::mark_stored(&server.state.db, web1.id, library.id, &copy)
            .await
            .expect("store")
    );
    db::vms::delete(&server.state.db, web1.id)
        .await
        .expect("delete");
    assert_eq!(claimed(&server, &library).await, (0, 0, 0));
    assert_eq!(claimed(&server, &kvm1).await, (1, 256, 1 << 20));
}
