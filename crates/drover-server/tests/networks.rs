//! Component tests of networks and the MAC and IP pools: the server's router in-process on a
//! fresh database, with no agent behind it (so networks are realized on no host).

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host, vm_row};
use drover_api::{Network, Vm, VmState};
use drover_server::db;
use drover_server::db::networks::AllocationError;
use serde_json::{Value, json};

/// Posts a job-starting request and waits until its job ends; the job's final JSON.
async fn run_job(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Value {
    server.job_json(method, path, body).await
}

fn network_request(name: &str, subnet: &str) -> Value {
    json!({"name": name, "mode": "nat", "subnet": subnet})
}

async fn network(server: &TestServer, name: &str) -> Network {
    let answer = server
        .call(Method::GET, &format!("/api/v1/networks/{name}"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_value(answer.body).expect("a network")
}

#[tokio::test]
async fn network_settings_are_checked_and_bad_ones_change_nothing() {
    let server = TestServer::new().await;
    let job = run_job(
        &server,
        Method::POST,
        "/api/v1/networks",
        Some(network_request("lab", "10.10.0.0/24")),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["kind"], "network.create");
    let lab = network(&server, "lab").await;
    assert_eq!(lab.gateway.as_deref(), Some("10.10.0.1"));
    assert_eq!(lab.dhcp_start.as_deref(), Some("10.10.0.2"));
    assert_eq!(lab.dhcp_end.as_deref(), Some("10.10.0.254"));
    assert_eq!(lab.bridge, "dr-lab");
    assert_eq!(lab.vni, None);

    let cases = [
        (network_request("lab", "10.20.0.0/24"), "network_exists"),
        (network_request("wide", "10.0.0.0/8"), "subnet_overlap"),
        (network_request("inner", "10.10.0.128/25"), "subnet_overlap"),
        (
            json!({"name": "g", "mode": "nat", "subnet": "10.30.0.0/24", "gateway": "10.31.0.1"}),
            "invalid_network",
        ),
        (
            json!({"name": "r", "mode": "nat", "subnet": "10.30.0.0/24", "dhcp_range": "10.30.0.200-10.30.1.10"}),
            "invalid_network",
        ),
        (
            json!({"name": "r", "mode": "isolated", "subnet": "10.30.0.0/24", "dhcp_range": "10.30.0.1-10.30.0.9"}),
            "invalid_network",
        ),
        (
            json!({"name": "v", "mode": "bridged", "uplink": "eth0", "vlan": 4095}),
            "invalid_network",
        ),
        (
            json!({"name": "v", "mode": "bridged", "uplink": "eth0", "vlan": 0}),
            "invalid_network",
        ),
        (
            network_request("thirteen-char", "10.40.0.0/24"),
            "invalid_network",
        ),
        (network_request("user", "10.40.0.0/24"), "invalid_network"),
        (json!({"name": "nosub", "mode": "nat"}), "invalid_network"),
    ];
    for (body, code) in cases {
        let answer = server
            .call(Method::POST, "/api/v1/networks", Some(body.clone()))
            .await;
        assert!(answer.status.is_client_error(), "{body}: {}", answer.body);
        assert_eq!(error_code(&answer), code, "{body}");
    }
    let names: Vec<String> = server
        .call(Method::GET, "/api/v1/networks", None)
        .await
        .body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|network| network["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, vec!["lab"]);

    // Overlays get VXLAN ids of their own.
    for (name, subnet) in [("ov1", "10.50.0.0/24"), ("ov2", "10.51.0.0/24")] {
        let body = json!({"name": name, "mode": "isolated", "subnet": subnet, "overlay": true});
        let job = run_job(&server, Method::POST, "/api/v1/networks", Some(body)).await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    assert_eq!(network(&server, "ov1").await.vni, Some(10_000));
    assert_eq!(network(&server, "ov2").await.vni, Some(10_001));

    let job = run_job(&server, Method::DELETE, "/api/v1/networks/ov1", None).await;
    assert_eq!(job["status"], "completed", "{job}");
    let gone = server.call(Method::GET, "/api/v1/networks/ov1", None).await;
    assert_eq!(error_code(&gone), "network_not_found");
}

#[tokio::test]
async fn macs_and_ips_come_from_pools_and_go_back_when_a_vm_goes() {
    let server = TestServer::new().await;
    let db = &server.state.db;
    let body = json!({"name": "small", "mode": "nat", "subnet": "10.60.0.0/29",
        "dhcp_range": "10.60.0.2-10.60.0.3"});
    run_job(&server, Method::POST, "/api/v1/networks", Some(body)).await;
    let small = network(&server, "small").await;
    // A host that cannot be reached fails a create, which then leaves nothing behind.
    let host = insert_host(&server.state, "kvm1", 2, 2048).await;
    let job = run_job(
        &server,
        Method::POST,
        "/api/v1/networks",
        Some(network_request("late", "10.61.0.0/24")),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "host_unreachable", "{job}");
    let gone = server
        .call(Method::GET, "/api/v1/networks/late", None)
        .await;
    assert_eq!(error_code(&gone), "network_not_found");

    let mut vms = Vec::new();
    for name in ["a", "b"] {
        let vm = vm_row(&host, name, VmState::Stopped);
        db::vms::insert(db, &vm).await.expect("vm row");
        db::networks::allocate_nics(db, vm.id, &[Some(small.clone()), None])
            .await
            .expect("addresses");
        vms.push(vm);
    }
    let a: Vm = serde_json::from_value(server.call(Method::GET, "/api/v1/vms/a", None).await.body)
        .expect("vm a");
    let b: Vm = serde_json::from_value(server.call(Method::GET, "/api/v1/vms/b", None).await.body)
        .expect("vm b");
    assert_eq!(
        a.nics
            .iter()
            .map(|nic| (nic.name.as_str(), nic.network.as_str(), nic.ip.as_deref()))
            .collect::<Vec<_>>(),
        vec![("nic0", "small", Some("10.60.0.2")), ("nic1", "user", None)]
    );
    assert_eq!(b.nics[0].ip.as_deref(), Some("10.60.0.3"));
    let mut macs: Vec<&str> = a
        .nics
        .iter()
        .chain(&b.nics)
        .map(|nic| nic.mac.as_str())
        .collect();
    assert!(
        macs.iter().all(|mac| mac.starts_with("52:54:00:d0:")),
        "{macs:?}"
    );
    macs.sort_unstable();
    macs.dedup();
    assert_eq!(macs.len(), 4, "every NIC has its own MAC");

    // The range is full: a third VM is refused and keeps nothing.
    let c = vm_row(&host, "c", VmState::Stopped);
    db::vms::insert(db, &c).await.expect("vm row");
    let full = db::networks::allocate_nics(db, c.id, &[Some(small.clone())]).await;
    assert!(
        matches!(full, Err(AllocationError::IpPoolExhausted(_))),
        "{full:?}"
    );

    // In use: the delete is refused at once, naming the VMs.
    let refused = server
        .call(Method::DELETE, "/api/v1/networks/small", None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&refused), "network_in_use");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("a, b"), "{message}");

    // A deleted VM returns its address: the next VM gets it.
    db::vms::delete(db, vms[0].id).await.expect("delete a");
    db::networks::allocate_nics(db, c.id, &[Some(small.clone())])
        .await
        .expect("the returned address");
    let c: Vm = serde_json::from_value(server.call(Method::GET, "/api/v1/vms/c", None).await.body)
        .expect("vm c");
    assert_eq!(c.nics[0].ip.as_deref(), Some("10.60.0.2"));

    // VM requests that name networks are checked before anything is made.
    let unknown = server
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(
                json!({"name": "d", "host": "kvm1", "cpus": 1, "memory_mib": 128,
                "disk": {"kind": "none"}, "networks": ["nowhere"]}),
            ),
        )
        .await;
    assert_eq!(error_code(&unknown), "network_not_found");
    let no_user_nic = server
        .call(
            Method::POST,
            "/api/v1/vms/b/port-forwards",
            Some(json!({"host_port": 8080, "guest_port": 80})),
        )
        .await;
    assert_eq!(no_user_nic.status, StatusCode::ACCEPTED, "b has a user NIC");
    let c_forward = server
        .call(
            Method::POST,
            "/api/v1/vms/c/port-forwards",
            Some(json!({"host_port": 8081, "guest_port": 80})),
        )
        .await;
    assert_eq!(error_code(&c_forward), "vm_has_no_user_nic");
    let zero = server
        .call(
            Method::POST,
            "/api/v1/vms/b/port-forwards",
            Some(json!({"host_port": 0, "guest_port": 80})),
        )
        .await;
    assert_eq!(error_code(&zero), "invalid_port_forward");
    for (path, code) in [
        (
            "/api/v1/vms/c/port-forwards/udp/5353",
            "port_forward_not_found",
        ),
        (
            "/api/v1/vms/c/port-forwards/sctp/5353",
            "invalid_port_forward",
        ),
        ("/api/v1/vms/c/port-forwards/tcp/0", "invalid_port_forward"),
        ("/api/v1/vms/nobody/port-forwards/tcp/80", "vm_not_found"),
    ] {
        let removed = server.call(Method::DELETE, path, None).await;
        assert_eq!(error_code(&removed), code, "{path}");
    }
}
