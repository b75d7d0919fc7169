//! Hosts leaving the group a network is scoped to, through the router in-process with no agent
//! behind it (how a network stands on a host is recorded as an agent would report it): a host
//! move is refused while VMs on the host use such a network, and a group move that would take
//! hosts out of a network they carry is refused; neither changes anything.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host, vm_row};
use drover_api::network::NetworkHostState;
use drover_api::{Network, VmState};
use drover_server::db;
use serde_json::{Value, json};

async fn make_group(server: &TestServer, name: &str, parent: &str) {
    let made = server
        .call(
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": name, "parent": parent, "settings": {}})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
}

async fn get(server: &TestServer, path: &str) -> Value {
    let answer = server.call(Method::GET, path, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

#[tokio::test]
async fn hosts_and_groups_cannot_leave_a_network_scope_behind_its_vms_or_its_bridges() {
    let server = TestServer::new().await;
    let db = &server.state.db;
    for (name, parent) in [
        ("rack", "All Hosts"),
        ("lab", "All Hosts"),
        ("inner", "rack"),
        ("shelf", "rack"),
    ] {
        make_group(&server, name, parent).await;
    }
    // Made before any host exists, so it is realized on none; the agent's report comes below.
    let created = server
        .job_json(
            Method::POST,
            "/api/v1/networks",
            Some(json!({"name": "racknet", "mode": "isolated", "subnet": "10.60.0.0/24", "group": "rack"})),
        )
        .await;
    assert_eq!(created["status"], "completed", "{created}");
    let racknet: Network =
        serde_json::from_value(get(&server, "/api/v1/networks/racknet").await).expect("network");
    let host = insert_host(&server.state, "h", 4, 8192).await;
    let moved = server
        .job_json(
            Method::POST,
            "/api/v1/hosts/h/move",
            Some(json!({"group": "inner"})),
        )
        .await;
    assert_eq!(moved["status"], "completed", "{moved}");
    db::networks::set_host_state(db, racknet.id, host.id, NetworkHostState::Ready, None)
        .await
        .expect("host state");

    // A group move that takes h out of rack is refused, naming the network and the host.
    let refused = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/inner",
            Some(json!({"parent": "lab"})),
        )
        .await;
    assert_eq!(error_code(&refused), "group_move_leaves_network_scope");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("racknet on h")),
        "{}",
        refused.body
    );
    let inner = get(&server, "/api/v1/hostgroups/inner").await;
    let rack = get(&server, "/api/v1/hostgroups/rack").await;
    assert_eq!(inner["parent_id"], rack["id"], "nothing changed");
    // Within the scope, the group moves.
    let within = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/inner",
            Some(json!({"parent": "shelf"})),
        )
        .await;
    assert_eq!(within.status, StatusCode::OK, "{}", within.body);

    // A VM on h uses racknet: h may not leave rack, and stays where it is.
    let vm = vm_row(&host, "user", VmState::Stopped);
    db::vms::insert(db, &vm).await.expect("vm row");
    db::networks::allocate_nics(db, vm.id, &[Some(racknet.clone())])
        .await
        .expect("addresses");
    let refused = server
        .call(
            Method::POST,
            "/api/v1/hosts/h/move",
            Some(json!({"group": "lab"})),
        )
        .await;
    assert_eq!(error_code(&refused), "network_in_use_on_host");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("racknet") && message.contains("user"),
        "{message}"
    );
    assert_eq!(get(&server, "/api/v1/hosts/h").await["group_name"], "inner");
    // Inside the scope, the move is no concern of the network's.
    let moved = server
        .job_json(
            Method::POST,
            "/api/v1/hosts/h/move",
            Some(json!({"group": "rack"})),
        )
        .await;
    assert_eq!(moved["status"], "completed", "{moved}");
}
