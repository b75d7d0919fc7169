//! Checkpoint requests the server refuses before any job runs (each error code, nothing
//! changed), and the checkpoint tree the database keeps.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host, vm_row};
use drover_api::checkpoint::MAX_CHECKPOINTS_PER_VM;
use drover_api::{CheckpointId, Host, Vm, VmDisk, VmState};
use drover_server::db;
use serde_json::json;

async fn insert_vm(
    server: &TestServer,
    host: &Host,
    name: &str,
    disk: VmDisk,
    state: VmState,
) -> Vm {
    let vm = Vm {
        disk,
        ..vm_row(host, name, state)
    };
    db::vms::insert(&server.state.db, &vm)
        .await
        .expect("VM row");
    vm
}

fn blank() -> VmDisk {
    VmDisk::Blank {
        size_bytes: 1 << 30,
    }
}

async fn jobs_count(server: &TestServer) -> usize {
    let answer = server.call(Method::GET, "/api/v1/jobs", None).await;
    answer.body["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn bad_checkpoint_requests_are_refused_with_their_codes() {
    let server = TestServer::new().await;
    let host = insert_host(&server.state, "h1", 4, 4096).await;
    let web = insert_vm(&server, &host, "web", blank(), VmState::Stopped).await;
    insert_vm(&server, &host, "diskless", VmDisk::None, VmState::Stopped).await;
    let saved = insert_vm(&server, &host, "saved", blank(), VmState::Saved).await;
    let moving = insert_vm(&server, &host, "moving", blank(), VmState::Migrating).await;
    db::checkpoints::insert(&server.state.db, CheckpointId::new(), moving.id, "m1", true)
        .await
        .expect("row");
    let saved_checkpoint = CheckpointId::new();
    db::checkpoints::insert(&server.state.db, saved_checkpoint, saved.id, "s1", true)
        .await
        .expect("row");
    for index in 1..=MAX_CHECKPOINTS_PER_VM {
        db::checkpoints::insert(
            &server.state.db,
            CheckpointId::new(),
            web.id,
            &format!("c{index}"),
            false,
        )
        .await
        .expect("row");
    }

    let cases = [
        (
            Method::POST,
            "/api/v1/vms/nope/checkpoints",
            Some(json!({})),
            StatusCode::NOT_FOUND,
            "vm_not_found",
        ),
        (
            Method::POST,
            "/api/v1/vms/diskless/checkpoints",
            Some(json!({})),
            StatusCode::CONFLICT,
            "vm_has_no_disk",
        ),
        (
            Method::POST,
            "/api/v1/vms/saved/checkpoints",
            Some(json!({"name": "x"})),
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            Method::POST,
            "/api/v1/vms/web/checkpoints",
            Some(json!({"name": 5})),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/v1/vms/web/checkpoints",
            Some(json!({"name": "has space"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            Method::POST,
            "/api/v1/vms/web/checkpoints",
            Some(json!({"name": "c7"})),
            StatusCode::CONFLICT,
            "checkpoint_exists",
        ),
        (
            Method::POST,
            "/api/v1/vms/web/checkpoints",
            Some(json!({"name": "c51"})),
            StatusCode::CONFLICT,
            "checkpoint_limit_reached",
        ),
        (
            Method::POST,
            "/api/v1/vms/web/checkpoints/nope/restore",
            None,
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
        (
            Method::DELETE,
            "/api/v1/vms/web/checkpoints/nope",
            None,
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
        (
            Method::POST,
            "/api/v1/vms/saved/checkpoints/s1/restore",
            None,
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            Method::POST,
            "/api/v1/vms/moving/checkpoints/m1/restore",
            None,
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            Method::POST,
            "/api/v1/vms/moving/checkpoints",
            Some(json!({})),
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            Method::POST,
            "/api/v1/vms/saved/nics",
            Some(json!({"network": "user"})),
            StatusCode::CONFLICT,
            "vm_state_conflict",
        ),
        (
            Method::DELETE,
            "/api/v1/vms/diskless/checkpoints/x",
            None,
            StatusCode::NOT_FOUND,
            "checkpoint_not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let answer = server.call(method.clone(), path, body).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert_eq!(error_code(&answer), code, "{method} {path}");
    }
    assert_eq!(
        jobs_count(&server).await,
        0,
        "no refused request made a job"
    );

    let answer = server
        .call(Method::GET, "/api/v1/vms/web/checkpoints", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let items = answer.body["items"].as_array().expect("items");
    assert_eq!(items.len(), MAX_CHECKPOINTS_PER_VM);
    assert_eq!(items[0]["name"], "c1");
    assert!(
        items[0].get("on_host").is_none(),
        "the host did not answer, so nothing is claimed about it: {}",
        items[0]
    );

    // A saved VM lets go of a checkpoint (its disk is not in use); the job is accepted.
    let answer = server
        .call(Method::DELETE, "/api/v1/vms/saved/checkpoints/s1", None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["kind"], "vm.checkpoint_delete");
}

#[tokio::test]
async fn checkpoints_form_a_tree_with_one_current() {
    let server = TestServer::new().await;
    let host = insert_host(&server.state, "h1", 4, 4096).await;
    let vm = insert_vm(&server, &host, "web", blank(), VmState::Stopped).await;
    let db = &server.state.db;
    let [a, b, c] = [
        CheckpointId::new(),
        CheckpointId::new(),
        CheckpointId::new(),
    ];
    db::checkpoints::insert(db, a, vm.id, "a", true)
        .await
        .expect("a");
    let second = db::checkpoints::insert(db, b, vm.id, "b", false)
        .await
        .expect("b");
    assert_eq!(second.parent, Some(a));
    db::checkpoints::make_current(db, vm.id, a)
        .await
        .expect("restore a");
    let third = db::checkpoints::insert(db, c, vm.id, "c", true)
        .await
        .expect("c");
    assert_eq!(
        third.parent,
        Some(a),
        "a restore moves where the next one hangs"
    );
    let duplicate = db::checkpoints::insert(db, CheckpointId::new(), vm.id, "c", true).await;
    assert!(
        matches!(duplicate, Err(db::DbError::Duplicate { .. })),
        "{duplicate:?}"
    );

    db::checkpoints::delete(db, vm.id, c)
        .await
        .expect("delete c");
    let left = db::checkpoints::list(db, vm.id).await.expect("list");
    let current: Vec<&str> = left
        .iter()
        .filter(|cp| cp.current)
        .map(|cp| cp.name.as_str())
        .collect();
    assert_eq!(
        current,
        ["a"],
        "the parent of a deleted current checkpoint is current"
    );
    db::checkpoints::delete(db, vm.id, a)
        .await
        .expect("delete a");
    let left = db::checkpoints::list(db, vm.id).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id, left[0].parent),
        (b, None),
        "children move up to the parent"
    );

    db::vms::delete(db, vm.id).await.expect("delete VM");
    assert_eq!(
        db::checkpoints::count(db, vm.id).await.expect("count"),
        0,
        "a VM's checkpoints go with it"
    );
}
