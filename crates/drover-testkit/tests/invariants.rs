//! Checks the crate-dependency invariants written in ARCHITECTURE.md against `cargo metadata`,
//! so that a layering mistake fails the build instead of waiting for review.

use std::collections::BTreeMap;
use std::process::Command;

/// Drover crate name -> the Drover crates it depends on (normal dependencies only).
fn drover_dependencies() -> BTreeMap<String, Vec<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(drover_testkit::workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let metadata: serde_json::Value = serde_json::from_str(&text).expect("metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages array");
    packages
        .iter()
        .map(|package| {
            let name = package["name"].as_str().unwrap_or_default().to_owned();
            let dependencies = package["dependencies"]
                .as_array()
                .map(|list| list.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|dependency| dependency["kind"].is_null())
                .filter_map(|dependency| dependency["name"].as_str())
                .filter(|name| name.starts_with("drover"))
                .map(str::to_owned)
                .collect();
            (name, dependencies)
        })
        .collect()
}

#[test]
fn crate_layering_holds() {
    let graph = drover_dependencies();
    assert!(
        graph.contains_key("drover-api"),
        "workspace has drover-api: {graph:?}"
    );
    assert!(
        graph["drover-api"].is_empty(),
        "drover-api must depend on no other Drover crate: {:?}",
        graph["drover-api"]
    );
    assert!(
        graph["drover-qmp"].is_empty(),
        "drover-qmp knows nothing about Drover: {:?}",
        graph["drover-qmp"]
    );
    for crate_name in ["drover-server", "drover-client", "drover-cli"] {
        if let Some(dependencies) = graph.get(crate_name) {
            for forbidden in ["drover-hv", "drover-qmp", "drover-agent"] {
                assert!(
                    !dependencies.iter().any(|d| d == forbidden),
                    "{crate_name} must not depend on {forbidden}"
                );
            }
        }
    }
    for (crate_name, dependencies) in &graph {
        assert!(
            !dependencies.iter().any(|d| d == "drover"),
            "{crate_name} depends on the binary: {dependencies:?}"
        );
        // The benchmarks share the tests' tiny guest; no product crate may.
        if crate_name != "drover-bench" {
            assert!(
                !dependencies.iter().any(|d| d == "drover-testkit"),
                "{crate_name} depends on the testkit: {dependencies:?}"
            );
        }
    }
    assert_eq!(
        graph["drover-image"],
        ["drover-api"],
        "drover-image knows nothing of the server, the agent or the hypervisor"
    );
    for crate_name in ["drover-server", "drover-client", "drover-cli"] {
        assert!(
            !graph[crate_name].iter().any(|d| d == "drover-image"),
            "{crate_name} must not touch image files: the library servers do"
        );
    }
}
