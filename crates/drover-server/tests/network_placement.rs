//! Placement that knows networks and templates, through the router in-process on host rows
//! without agents: a host on which a network needs attention, or outside the host group a
//! network is scoped to, rates 0 with the reason; a template gives the VM's size and its disk's
//! virtual size; a linked clone claims its base's virtual size. Networks and host groups show
//! up on the event stream.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host};
use drover_api::library::{LibraryFile, LibraryItemKind};
use drover_api::network::NetworkHostState;
use drover_api::template::HardwareSpec;
use drover_api::{Event, LibraryItemId, LibraryShareId, ProfileId, TemplateId, VmDisk};
use drover_server::db;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::broadcast::Receiver;

/// Posts a job-starting request and waits until its job ends; the job's final JSON.
async fn run_job(server: &TestServer, path: &str, body: Value) -> Value {
    server.job_json(Method::POST, path, Some(body)).await
}

async fn rate(server: &TestServer, body: Value) -> Value {
    let answer = server
        .call(Method::POST, "/api/v1/placement/rate", Some(body.clone()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{body}: {}", answer.body);
    answer.body
}

/// The rating of `host` in a placement answer.
fn rating_of<'a>(rated: &'a Value, host: &str) -> &'a Value {
    rated["ratings"]
        .as_array()
        .and_then(|all| all.iter().find(|rating| rating["host_name"] == host))
        .unwrap_or_else(|| panic!("{host} is not rated: {rated}"))
}

fn reasons(rating: &Value) -> String {
    rating["reasons"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// The next event that `pick` accepts, within 10 s.
async fn next_event<T>(events: &mut Receiver<Event>, pick: impl Fn(Event) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.expect("the event stream stays open");
            if let Some(found) = pick(event) {
                return found;
            }
        }
    })
    .await
    .expect("the event comes")
}

#[tokio::test]
async fn hosts_that_cannot_carry_a_network_rate_zero_with_the_reason() {
    let server = TestServer::new().await;
    let mut events = server.state.subscribe();
    let lab = server
        .call(
            Method::POST,
            "/api/v1/hostgroups",
            Some(json!({"name": "lab", "settings": {}})),
        )
        .await;
    assert_eq!(lab.status, StatusCode::CREATED, "{}", lab.body);
    let group = next_event(&mut events, |event| match event {
        Event::HostGroupChanged(group) => Some(group),
        _ => None,
    })
    .await;
    assert_eq!(group.name, "lab");

    // The networks come first, so they are realized on no host (there is no agent); how they
    // stand on the hosts is recorded below as an agent would report it.
    let scoped = run_job(
        &server,
        "/api/v1/networks",
        json!({"name": "labnet", "mode": "isolated", "subnet": "10.50.0.0/24", "group": "lab"}),
    )
    .await;
    assert_eq!(scoped["status"], "completed", "{scoped}");
    assert_eq!(
        scoped["steps"][1]["name"],
        "Realize the network on every host of its group"
    );
    let created = next_event(&mut events, |event| match event {
        Event::NetworkChanged(network) if network.name == "labnet" => Some(network),
        _ => None,
    })
    .await;
    assert_eq!(created.group.as_deref(), Some("lab"));
    let far = run_job(
        &server,
        "/api/v1/networks",
        json!({"name": "far", "mode": "bridged", "uplink": "eth9"}),
    )
    .await;
    assert_eq!(far["status"], "completed", "{far}");
    let far_id = next_event(&mut events, |event| match event {
        Event::NetworkChanged(network) if network.name == "far" => Some(network.id),
        _ => None,
    })
    .await;

    let inside = insert_host(&server.state, "inside", 4, 8192).await;
    let outside = insert_host(&server.state, "outside", 4, 8192).await;
    let moved = run_job(
        &server,
        "/api/v1/hosts/inside/move",
        json!({"group": "lab"}),
    )
    .await;
    assert_eq!(moved["status"], "completed", "{moved}");
    db::networks::set_host_state(
        &server.state.db,
        far_id,
        outside.id,
        NetworkHostState::NeedsAttention,
        Some("uplink eth9 does not exist on this host"),
    )
    .await
    .expect("host state");

    let shown = server
        .call(Method::GET, "/api/v1/networks/labnet", None)
        .await;
    assert_eq!(shown.body["group"], "lab", "{}", shown.body);

    // Scope: only the group's hosts carry labnet.
    let rated = rate(
        &server,
        json!({"cpus": 1, "memory_mib": 256, "networks": ["labnet"]}),
    )
    .await;
    let out = rating_of(&rated, "outside");
    assert_eq!(out["rating"], 0.0, "{rated}");
    assert_eq!(
        reasons(out),
        "network labnet: carried only by the hosts of group lab"
    );
    assert!(rating_of(&rated, "inside")["rating"].as_f64() > Some(0.0));
    assert_eq!(rated["ratings"][0]["host_name"], "inside");

    // Needs attention: the host without the uplink rates 0 with the host's own words; both
    // networks together leave no host.
    let rated = rate(
        &server,
        json!({"cpus": 1, "memory_mib": 256, "networks": ["far"]}),
    )
    .await;
    assert_eq!(
        reasons(rating_of(&rated, "outside")),
        "network far: needs attention on this host: uplink eth9 does not exist on this host"
    );
    assert!(rating_of(&rated, "inside")["rating"].as_f64() > Some(0.0));
    let rated = rate(
        &server,
        json!({"cpus": 1, "memory_mib": 65536, "networks": ["far", "labnet"]}),
    )
    .await;
    let both = reasons(rating_of(&rated, "outside"));
    assert!(
        both.contains("group lab") && both.contains("eth9") && both.contains("VM needs 64 GiB"),
        "the network reasons come first, then the host's own: {both}"
    );

    // vm create: by name on a host that cannot carry the network, and placed with nowhere to
    // go; nothing is created.
    let vm = |host: Option<&str>, network: &str| {
        let mut body = json!({"name": "web", "cpus": 1, "memory_mib": 256,
            "disk": {"kind": "none"}, "networks": [network]});
        if let Some(host) = host {
            body["host"] = json!(host);
        }
        body
    };
    for (body, code) in [
        (vm(Some("outside"), "labnet"), "network_not_in_group"),
        (vm(Some("outside"), "far"), "network_needs_attention"),
    ] {
        let refused = server.call(Method::POST, "/api/v1/vms", Some(body)).await;
        assert_eq!(error_code(&refused), code, "{}", refused.body);
    }
    db::hosts::set_maintenance(&server.state.db, inside.id, true)
        .await
        .expect("maintenance");
    let nowhere = server
        .call(Method::POST, "/api/v1/vms", Some(vm(None, "labnet")))
        .await;
    assert_eq!(error_code(&nowhere), "no_suitable_host", "{}", nowhere.body);
    let message = nowhere.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("carried only by the hosts of group lab"),
        "{message}"
    );
    let vms = server.call(Method::GET, "/api/v1/vms", None).await;
    assert_eq!(vms.body["items"], json!([]));
    let unknown = server
        .call(
            Method::POST,
            "/api/v1/placement/rate",
            Some(json!({"cpus": 1, "memory_mib": 256, "networks": ["nope"]})),
        )
        .await;
    assert_eq!(error_code(&unknown), "network_not_found");
    let bad_scope = server
        .call(
            Method::POST,
            "/api/v1/networks",
            Some(
                json!({"name": "x", "mode": "isolated", "subnet": "10.51.0.0/24", "group": "nope"}),
            ),
        )
        .await;
    assert_eq!(error_code(&bad_scope), "host_group_not_found");

    // A group that scopes a network cannot go; the message names the network.
    let moved = run_job(
        &server,
        "/api/v1/hosts/inside/move",
        json!({"group": "All Hosts"}),
    )
    .await;
    assert_eq!(moved["status"], "completed", "{moved}");
    let kept = server
        .call(Method::DELETE, "/api/v1/hostgroups/lab", None)
        .await;
    assert_eq!(error_code(&kept), "host_group_not_empty");
    assert!(
        kept.body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("labnet")),
        "{}",
        kept.body
    );

    // Deleting the network is an event; then the group can go, which is one too.
    let deleted = server
        .call(Method::DELETE, "/api/v1/networks/labnet", None)
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    next_event(&mut events, |event| match event {
        Event::NetworkDeleted(id) if id == created.id => Some(()),
        _ => None,
    })
    .await;
    let gone = server
        .call(Method::DELETE, "/api/v1/hostgroups/lab", None)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
    next_event(&mut events, |event| match event {
        Event::HostGroupDeleted(id) if id == group.id => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn templates_give_ratings_their_size_and_linked_clones_claim_their_base() {
    let server = TestServer::new().await;
    let mut events = server.state.subscribe();
    // No disk reserve, so a host's 1 GiB free is all placement may claim.
    let root = server
        .call(
            Method::PATCH,
            "/api/v1/hostgroups/All%20Hosts",
            Some(json!({"settings": {"reserve_disk_bytes": 0}})),
        )
        .await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    let changed = next_event(&mut events, |event| match event {
        Event::HostGroupChanged(group) => Some(group),
        _ => None,
    })
    .await;
    assert_eq!(changed.name, "All Hosts");
    let library = insert_host(&server.state, "library", 2, 4096).await;
    let host = insert_host(&server.state, "small", 2, 4096).await;

    let share_id = LibraryShareId::new();
    db::library::insert_share(
        &server.state.db,
        share_id,
        "images",
        library.id,
        "/srv/images",
    )
    .await
    .expect("share");
    let item_id = LibraryItemId::new();
    const BASE_BYTES: u64 = 600 << 20;
    db::library::insert_item(
        &server.state.db,
        item_id,
        "debian",
        share_id,
        &LibraryFile {
            path: "debian.qcow2".to_owned(),
            kind: LibraryItemKind::Disk,
            format: "qcow2".to_owned(),
            virtual_size: BASE_BYTES,
            actual_size: 100 << 20,
            backing_chain: Vec::new(),
            sha256: "ab".repeat(32),
        },
    )
    .await
    .expect("item");
    let hardware_id = ProfileId::new();
    let spec = HardwareSpec {
        cpus: 2,
        memory_mib: 1536,
        data_disks: Vec::new(),
        nics: Vec::new(),
        boot_order: Vec::new(),
        machine: None,
        kernel: None,
        initrd: None,
        cmdline: None,
    };
    db::templates::insert_profile(
        &server.state.db,
        hardware_id,
        db::templates::HARDWARE,
        "medium",
        &spec,
    )
    .await
    .expect("profile");
    db::templates::insert_template(
        &server.state.db,
        TemplateId::new(),
        "deb",
        item_id,
        hardware_id,
        None,
    )
    .await
    .expect("template");

    // The template's figures: 2 vCPUs, 1.5 GiB, and its disk's 600 MiB.
    let rated = rate(&server, json!({"template": "deb"})).await;
    let small = reasons(rating_of(&rated, "small"));
    assert!(
        small.contains("2 of 8 vCPU slots")
            && small.contains("VM needs 1.5 GiB")
            && small.contains("VM needs 600 MiB"),
        "{small}"
    );
    // A figure given overrides the template's.
    let rated = rate(&server, json!({"template": "deb", "memory_mib": 8192})).await;
    assert_eq!(rating_of(&rated, "small")["rating"], 0.0, "{rated}");
    for (body, code) in [
        (json!({"template": "nope"}), "template_not_found"),
        (json!({"memory_mib": 256}), "invalid_vm_spec"),
    ] {
        let refused = server
            .call(Method::POST, "/api/v1/placement/rate", Some(body))
            .await;
        assert_eq!(error_code(&refused), code, "{}", refused.body);
    }

    // A linked clone claims its base's virtual size: one fits in 1 GiB, a second does not.
    let disk = VmDisk::Library {
        item: "debian".to_owned(),
        sha256: "ab".repeat(32),
        url: "https://library.invalid:8102/v1/shares/images/files/debian.qcow2".to_owned(),
    };
    let claim = drover_server::placement::disk_claim(&server.state, &disk)
        .await
        .expect("claim size");
    assert_eq!(claim, BASE_BYTES);
    let reserves = db::placement::Reserves {
        memory_mib: 0,
        disk_bytes: 0,
    };
    let clone = |name: &str| {
        let now = chrono::Utc::now();
        drover_api::Vm {
            id: drover_api::VmId::new(),
            name: name.to_owned(),
            host_id: host.id,
            host_name: host.name.clone(),
            state: drover_api::VmState::Creating,
            state_reason: None,
            cpus: 1,
            memory_mib: 256,
            disk: disk.clone(),
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: Vec::new(),
            port_forwards: Vec::new(),
            devices: Default::default(),
            created_at: now,
            updated_at: now,
        }
    };
    assert!(
        db::placement::claim(&server.state.db, &clone("first"), claim, reserves)
            .await
            .expect("claim")
    );
    assert!(
        !db::placement::claim(&server.state.db, &clone("second"), claim, reserves)
            .await
            .expect("claim"),
        "a second 600 MiB clone must not fit in the 424 MiB left"
    );
    let rated = rate(&server, json!({"template": "deb"})).await;
    let small = rating_of(&rated, "small");
    assert_eq!(small["rating"], 0.0, "{rated}");
    assert!(
        reasons(small).contains("disk: 424 MiB free after reserves and claimed disks"),
        "{}",
        reasons(small)
    );
}
