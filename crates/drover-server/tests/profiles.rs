//! Profiles, templates and library lists through the router on a fresh database: paged lists,
//! deletes refused while templates depend on the profile, and V2V and package imports refused
//! at once (nothing recorded) when their request cannot work.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestServer, error_code, insert_host};
use drover_api::library::{LibraryFile, LibraryItemKind};
use drover_api::{JobStatus, LibraryItemId, LibraryShareId, ProfileId, TemplateId};
use serde_json::{Value, json};

async fn hardware(server: &TestServer, name: &str) {
    let job = server
        .job(
            Method::POST,
            "/api/v1/profiles/hardware",
            Some(json!({"name": name, "cpus": 1, "memory_mib": 128})),
        )
        .await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
}

/// Every name of a list, page by page with `limit`, and the number of pages.
async fn names_by_pages(server: &TestServer, path: &str, limit: u32) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("{path}?limit={limit}&cursor={cursor}"),
            None => format!("{path}?limit={limit}"),
        };
        let answer = server.call(Method::GET, &query, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        pages += 1;
        let items = answer.body["items"].as_array().expect("items");
        assert!(items.len() <= limit as usize);
        names.extend(
            items
                .iter()
                .map(|item| item["name"].as_str().expect("name").to_owned()),
        );
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (names, pages),
        }
        assert!(pages < 10, "the pages never end");
    }
}

#[tokio::test]
async fn lists_page_and_profiles_in_use_are_not_deleted() {
    let server = TestServer::new().await;
    for name in ["p3", "p1", "p2", "p5", "p4"] {
        hardware(&server, name).await;
    }
    let (names, pages) = names_by_pages(&server, "/api/v1/profiles/hardware", 2).await;
    assert_eq!(names, ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(pages, 3);
    let bad = server
        .call(Method::GET, "/api/v1/templates?cursor=zz", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&bad), "invalid_query");

    // A library item and a template that uses p1, straight in the database.
    let host = insert_host(&server.state, "lib1", 2, 4096).await;
    let share_id = LibraryShareId::new();
    drover_server::db::library::insert_share(&server.state.db, share_id, "main", host.id, "/srv")
        .await
        .expect("share");
    let item_id = LibraryItemId::new();
    for index in 0..3 {
        let file = LibraryFile {
            path: format!("disk{index}.qcow2"),
            kind: LibraryItemKind::Disk,
            format: "qcow2".into(),
            virtual_size: 1 << 20,
            actual_size: 1 << 16,
            backing_chain: Vec::new(),
            sha256: format!("{index:064}"),
        };
        let id = if index == 0 {
            item_id
        } else {
            LibraryItemId::new()
        };
        drover_server::db::library::insert_item(
            &server.state.db,
            id,
            &format!("disk{index}"),
            share_id,
            &file,
        )
        .await
        .expect("item");
    }
    let (items, pages) = names_by_pages(&server, "/api/v1/library/items", 2).await;
    assert_eq!((items.len(), pages), (3, 2));
    let p1 = drover_server::db::templates::hardware_profile(&server.state.db, "p1")
        .await
        .expect("query")
        .expect("p1");
    drover_server::db::templates::insert_template(
        &server.state.db,
        TemplateId::new(),
        "web",
        item_id,
        p1.id,
        None,
    )
    .await
    .expect("template");

    let refused = server
        .call(Method::DELETE, "/api/v1/profiles/hardware/p1", None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(error_code(&refused), "profile_in_use");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("web")),
        "{}",
        refused.body
    );
    let missing = server
        .call(Method::DELETE, "/api/v1/profiles/guest-os/p1", None)
        .await;
    assert_eq!(error_code(&missing), "profile_not_found");

    let deleted = server
        .job(Method::DELETE, "/api/v1/templates/web", None)
        .await;
    assert_eq!(deleted.status, JobStatus::Completed, "{deleted:?}");
    assert_eq!(deleted.kind, "template.delete");
    let gone = server
        .call(Method::GET, "/api/v1/templates/web", None)
        .await;
    assert_eq!(error_code(&gone), "template_not_found");
    let deleted = server
        .job(Method::DELETE, "/api/v1/profiles/hardware/p1", None)
        .await;
    assert_eq!(deleted.status, JobStatus::Completed, "{deleted:?}");
    assert_eq!(deleted.kind, "profile.hardware_delete");
    let (names, _) = names_by_pages(&server, "/api/v1/profiles/hardware", 100).await;
    assert_eq!(names, ["p2", "p3", "p4", "p5"]);
    let unknown_id = ProfileId::new();
    let missing = server
        .call(
            Method::DELETE,
            &format!("/api/v1/profiles/hardware/{unknown_id}"),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_v2v_and_package_imports_are_refused_at_once() {
    let server = TestServer::new().await;
    let answer = server
        .call(
            Method::POST,
            "/api/v1/v2v",
            Some(json!({"source": "/srv/web.ova"})),
        )
        .await;
    assert_eq!(error_code(&answer), "share_required");

    let host = insert_host(&server.state, "lib1", 2, 4096).await;
    drover_server::db::library::insert_share(
        &server.state.db,
        LibraryShareId::new(),
        "main",
        host.id,
        "/srv",
    )
    .await
    .expect("share");
    hardware(&server, "web").await;
    let cases: [(Value, StatusCode, &str); 4] = [
        (
            json!({"source": "/srv/web.ova", "name": "bad name"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
        (
            json!({"source": "/srv/web.ova", "host": "nowhere"}),
            StatusCode::NOT_FOUND,
            "host_not_found",
        ),
        (
            json!({"source": "/srv/web.ova", "share": "other"}),
            StatusCode::NOT_FOUND,
            "share_not_found",
        ),
        (
            json!({"sauce": "/srv/web.ova"}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let answer = server
            .call(Method::POST, "/api/v1/v2v", Some(body.clone()))
            .await;
        assert_eq!(
            (answer.status, error_code(&answer).as_str()),
            (status, code),
            "{body}"
        );
    }
    // A package import would make hardware profile `web`, which exists.
    let answer = server
        .call(
            Method::POST,
            "/api/v1/library/items",
            Some(json!({"source": "/srv/web.ova"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&answer), "profile_exists");
    let jobs = server.call(Method::GET, "/api/v1/jobs", None).await;
    let kinds: Vec<&str> = jobs.body["items"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["profile.hardware_create"], "refusals make no job");
    let vms = server.call(Method::GET, "/api/v1/vms", None).await;
    assert_eq!(vms.body["items"], json!([]));
}
