//! Host groups, reserves inheritance, host moves, maintenance and placement ratings through the
//! router in-process, on host rows without agents. Bad input must change nothing.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host};
use drover_api::{HostGroup, Job, JobStatus};
use serde_json::{Value, json};

async fn group(server: &TestServer, body: Value) -> HostGroup {
    let answer = server
        .call(Method::POST, "/api/v1/hostgroups", Some(body.clone()))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{body}: {}",
        answer.body
    );
    serde_json::from_value(answer.body).expect("a group")
}

/// Submits a job and waits for it to end.
async fn job(server: &TestServer, path: &str, body: Value) -> Job {
    server.job(Method::POST, path, Some(body)).await
}

fn effective<'a>(group: &'a Value, setting: &str) -> (&'a Value, &'a Value) {
    let item = group["effective"]
        .as_array()
        .and_then(|all| all.iter().find(|item| item["setting"] == setting))
        .expect("the setting is in force");
    (&item["value"], &item["from"])
}

#[tokio::test]
async fn group_tree_inheritance_and_bad_input_changing_nothing() {
    let server = TestServer::new().await;
    let prod = group(
        &server,
        json!({"name": "prod", "settings": {"reserve_memory_mib": 2048}}),
    )
    .await;
    assert_eq!(prod.path, "All Hosts / prod");
    let web = group(
        &server,
        json!({"name": "web", "parent": "prod", "settings": {"weight_cpu": 5}}),
    )
    .await;
    assert_eq!(web.parent_id, Some(prod.id));
    let shown = server
        .call(Method::GET, "/api/v1/hostgroups/web", None)
        .await;
    assert_eq!(
        effective(&shown.body, "reserve_memory_mib"),
        (&json!(2048), &json!("prod"))
    );
    assert_eq!(
        effective(&shown.body, "weight_cpu"),
        (&json!(5), &json!("web"))
    );
    assert_eq!(
        effective(&shown.body, "reserve_cpu_percent"),
        (&json!(10), &json!("All Hosts"))
    );

    // Overriding in prod reaches web; returning it to inheritance brings the root's back.
    let set = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/prod",
            Some(json!({"settings": {"reserve_cpu_percent": 25}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let shown = server
        .call(Method::GET, "/api/v1/hostgroups/web", None)
        .await;
    assert_eq!(
        effective(&shown.body, "reserve_cpu_percent"),
        (&json!(25), &json!("prod"))
    );
    let inherit = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/prod",
            Some(json!({"inherit": ["reserve_cpu_percent"]})),
        )
        .await;
    assert_eq!(inherit.status, StatusCode::OK, "{}", inherit.body);
    assert_eq!(
        effective(&inherit.body, "reserve_cpu_percent"),
        (&json!(10), &json!("All Hosts"))
    );

    let host = insert_host(&server.state, "kvm1", 4, 8192).await;
    let moved = job(&server, "/api/v1/hosts/kvm1/move", json!({"group": "web"})).await;
    assert_eq!(moved.status, JobStatus::Completed, "{moved:?}");
    let shown = server.call(Method::GET, "/api/v1/hosts/kvm1", None).await;
    assert_eq!(shown.body["group_name"], "web");
    assert_eq!(shown.body["id"], json!(host.id));

    let before = server.call(Method::GET, "/api/v1/hostgroups", None).await;
    let bad: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": "web"})),
            StatusCode::CONFLICT,
            "host_group_exists",
        ),
        (
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": "x", "parent": "nowhere"})),
            StatusCode::NOT_FOUND,
            "host_group_not_found",
        ),
        (
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": "bad name!"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": "x", "settings": {"reserve_cpu_percent": 150}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_group_settings",
        ),
        (
            Method::PATCH,
            "/api/v1/hostgroups/prod",
            Some(json!({"parent": "web"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "host_group_cycle",
        ),
        (
            Method::PATCH,
            "/api/v1/hostgroups/prod",
            Some(json!({"parent": "prod"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "host_group_cycle",
        ),
        // A valid setting with a bad one: neither is applied.
        (
            Method::PATCH,
            "/api/v1/hostgroups/prod",
            Some(json!({"settings": {"reserve_disk_bytes": 1, "reserve_cpu_percent": 101}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_group_settings",
        ),
        (
            Method::PATCH,
            "/api/v1/hostgroups/web",
            Some(json!({"parent": "All Hosts", "settings": {"weight_disk": 1000}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_group_settings",
        ),
        (
            Method::PATCH,
            "/api/v1/hostgroups/All Hosts",
            Some(json!({"inherit": ["weight_cpu"]})),
            StatusCode::CONFLICT,
            "host_group_root",
        ),
        (
            Method::PATCH,
            "/api/v1/hostgroups/All Hosts",
            Some(json!({"parent": "prod"})),
            StatusCode::CONFLICT,
            "host_group_root",
        ),
        (
            Method::DELETE,
            "/api/v1/hostgroups/All Hosts",
            None,
            StatusCode::CONFLICT,
            "host_group_root",
        ),
        (
            Method::DELETE,
            "/api/v1/hostgroups/prod",
            None,
            StatusCode::CONFLICT,
            "host_group_not_empty",
        ),
        (
            Method::DELETE,
            "/api/v1/hostgroups/web",
            None,
            StatusCode::CONFLICT,
            "host_group_not_empty",
        ),
        (
            Method::DELETE,
            "/api/v1/hostgroups/nowhere",
            None,
            StatusCode::NOT_FOUND,
            "host_group_not_found",
        ),
        (
            Method::POST,
            "/api/v1/hosts/kvm1/move",
            Some(json!({"group": "nowhere"})),
            StatusCode::NOT_FOUND,
            "host_group_not_found",
        ),
        (
            Method::POST,
            "/api/v1/hosts",
            Some(json!({"address": "127.0.0.1:1", "enrollment_code": "x", "group": "nowhere"})),
            StatusCode::NOT_FOUND,
            "host_group_not_found",
        ),
    ];
    for (method, path, body, status, code) in bad {
        let answer = server
            .call(method.clone(), &path.replace(' ', "%20"), body.clone())
            .await;
        assert_eq!(
            answer.status, status,
            "{method} {path} {body:?}: {}",
            answer.body
        );
        assert_eq!(error_code(&answer), code, "{method} {path}");
    }
    let after = server.call(Method::GET, "/api/v1/hostgroups", None).await;
    assert_eq!(before.body, after.body, "bad input changed nothing");

    // Moving web (with its host) to the root, then deleting the emptied prod.
    let moved = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/web",
            Some(json!({"parent": "All Hosts"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["path"], "All Hosts / web");
    assert_eq!(
        effective(&moved.body, "reserve_memory_mib"),
        (&json!(256), &json!("All Hosts"))
    );
    let deleted = server
        .call(Method::DELETE, "/api/v1/hostgroups/prod", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let list = server.call(Method::GET, "/api/v1/hostgroups", None).await;
    let paths: Vec<&str> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|g| g["path"].as_str())
        .collect();
    assert_eq!(paths, ["All Hosts", "All Hosts / web"]);
}

#[tokio::test]
async fn ratings_follow_reserves_groups_and_maintenance() {
    let server = TestServer::new().await;
    group(
        &server,
        json!({"name": "small", "settings": {"reserve_memory_mib": 3072}}),
    )
    .await;
    insert_host(&server.state, "roomy", 4, 8192).await;
    insert_host(&server.state, "tight", 4, 4096).await;
    insert_host(&server.state, "elsewhere", 4, 8192).await;
    for host in ["roomy", "tight"] {
        let moved = job(
            &server,
            &format!("/api/v1/hosts/{host}/move"),
            json!({"group": "small"}),
        )
        .await;
        assert_eq!(moved.status, JobStatus::Completed, "{moved:?}");
    }
    let rate = async |body: Value| {
        let answer = server
            .call(Method::POST, "/api/v1/placement/rate", Some(body))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    };
    let rated = rate(json!({"cpus": 1, "memory_mib": 2048, "group": "small"})).await;
    let names: Vec<&str> = rated["ratings"]
        .as_array()
        .expect("ratings")
        .iter()
        .filter_map(|r| r["host_name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["roomy", "tight"],
        "only the group's hosts, best first"
    );
    assert_eq!(rated["ratings"][1]["rating"], 0.0);
    assert_eq!(
        rated["ratings"][1]["reasons"][0],
        "memory: 1 GiB free after reserves and 0 VMs, VM needs 2 GiB"
    );
    assert!(rated["ratings"][0]["rating"].as_f64() > Some(0.0));

    let all = rate(json!({"cpus": 1, "memory_mib": 256})).await;
    assert_eq!(all["group"], "All Hosts");
    assert_eq!(all["ratings"].as_array().map(Vec::len), Some(3));
    let consolidate = rate(json!({"cpus": 1, "memory_mib": 256, "goal": "consolidate"})).await;
    assert_eq!(
        consolidate["ratings"][0]["host_name"], "tight",
        "the fullest host that fits"
    );

    let on = job(
        &server,
        "/api/v1/hosts/roomy/maintenance",
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(on.status, JobStatus::Completed, "{on:?}");
    assert_eq!(on.kind, "host.maintenance_on");
    let rated = rate(json!({"cpus": 1, "memory_mib": 256, "group": "small"})).await;
    let roomy = rated["ratings"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["host_name"] == "roomy"))
        .cloned()
        .expect("roomy rated");
    assert_eq!(roomy["rating"], 0.0);
    assert!(
        roomy["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("maintenance"))
    );
    let host = server.call(Method::GET, "/api/v1/hosts/roomy", None).await;
    assert_eq!(host.body["state"], "maintenance");
    let off = job(
        &server,
        "/api/v1/hosts/roomy/maintenance",
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(off.status, JobStatus::Completed, "{off:?}");
    let host = server.call(Method::GET, "/api/v1/hosts/roomy", None).await;
    assert_eq!(host.body["state"], "responding");

    // Bad requests: unknown group, a VM too small to be a VM; a VM bigger than any host is
    // refused by create with every host's reason, and nothing is created.
    let unknown = server
        .call(
            Method::POST,
            "/api/v1/placement/rate",
            Some(json!({"cpus": 1, "memory_mib": 256, "group": "nowhere"})),
        )
        .await;
    assert_eq!(error_code(&unknown), "host_group_not_found");
    let tiny = server
        .call(
            Method::POST,
            "/api/v1/placement/rate",
            Some(json!({"cpus": 0, "memory_mib": 256})),
        )
        .await;
    assert_eq!(error_code(&tiny), "invalid_vm_spec");
    let huge = server
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(json!({"name": "huge", "cpus": 1, "memory_mib": 65536, "disk": {"kind": "none"}})),
        )
        .await;
    assert_eq!(huge.status, StatusCode::CONFLICT, "{}", huge.body);
    assert_eq!(error_code(&huge), "no_suitable_host");
    let message = huge.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("roomy") && message.contains("VM needs 64 GiB"),
        "{message}"
    );
    let vms = server.call(Method::GET, "/api/v1/vms", None).await;
    assert_eq!(vms.body["items"], json!([]));

    // The claims on a host follow its VM rows: added, moved in size, removed.
    let host = server.call(Method::GET, "/api/v1/hosts/roomy", None).await;
    let now = chrono::Utc::now();
    let vm = drover_api::Vm {
        id: drover_api::VmId::new(),
        name: "claimer".to_owned(),
        host_id: serde_json::from_value(host.body["id"].clone()).expect("host id"),
        host_name: "roomy".to_owned(),
        state: drover_api::VmState::Stopped,
        state_reason: None,
        cpus: 2,
        memory_mib: 4096,
        disk: drover_api::VmDisk::Blank {
            size_bytes: 1 << 20,
        },
        kernel: None,
        initrd: None,
        cmdline: None,
        nics: Vec::new(),
        port_forwards: Vec::new(),
        devices: Default::default(),
        created_at: now,
        updated_at: now,
    };
    drover_server::db::vms::insert(&server.state.db, &vm)
        .await
        .expect("VM row");
    let roomy_line = async |memory_mib: u64| {
        let rated = rate(json!({"cpus": 1, "memory_mib": memory_mib, "group": "small"})).await;
        rated["ratings"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["host_name"] == "roomy"))
            .map(|r| r["reasons"].to_string())
            .unwrap_or_default()
    };
    assert!(
        roomy_line(256)
            .await
            .contains("memory: 1 GiB free after reserves and 1 VMs"),
        "8 GiB less the 3 GiB reserve and the 4 GiB VM"
    );
    let shown = server.call(Method::GET, "/api/v1/hosts/roomy", None).await;
    assert_eq!(shown.body["vm_count"], 1);
    drover_server::db::vms::delete(&server.state.db, vm.id)
        .await
        .expect("deleted");
    assert!(
        roomy_line(256)
            .await
            .contains("memory: 5 GiB free after reserves and 0 VMs")
    );
}
