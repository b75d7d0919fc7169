//! The port table of DESIGN.md section 2. Daemons bind only ports named here, `drover ports`
//! prints it with the values in force, and `docs/ports.md` is generated from it.

/// One connection between Drover's parts (or their users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortUse {
    pub connection: &'static str,
    pub protocol: &'static str,
    /// The configuration key that sets the port, if it can be set.
    pub config_key: Option<&'static str>,
    /// The port when no key is set (for keyless rows: what is written in the table).
    pub fixed: &'static str,
    /// What SCVMM 2008 used for the same connection.
    pub seed: &'static str,
}

pub const PORT_TABLE: &[PortUse] = &[
    PortUse {
        connection: "CLI, web console, SDKs to server",
        protocol: "HTTPS: REST + WebSocket",
        config_key: Some("server.api_port"),
        fixed: "",
        seed: "WCF 8100",
    },
    PortUse {
        connection: "browsers to a separate self-service portal front end",
        protocol: "HTTPS",
        config_key: Some("portal.port"),
        fixed: "",
        seed: "HTTP 80",
    },
    PortUse {
        connection: "portal front end to server",
        protocol: "HTTPS",
        config_key: Some("portal.server_url"),
        fixed: "",
        seed: "WCF 8100",
    },
    PortUse {
        connection: "server to agent: control and event stream",
        protocol: "HTTPS, mutual TLS",
        config_key: Some("agent.control_port"),
        fixed: "",
        seed: "WinRM 80",
    },
    PortUse {
        connection: "server/library/host to agent: file transfer",
        protocol: "HTTPS, mutual TLS, HTTP ranges",
        config_key: Some("agent.transfer_port"),
        fixed: "",
        seed: "BITS 443",
    },
    PortUse {
        connection: "host to host: live migration stream",
        protocol: "QEMU migration over TLS",
        config_key: Some("agent.migration_ports"),
        fixed: "",
        seed: "(R2: Hyper-V live migration)",
    },
    PortUse {
        connection: "host to host: overlay networks",
        protocol: "VXLAN over UDP",
        config_key: Some("network.vxlan_port"),
        fixed: "",
        seed: "-",
    },
    PortUse {
        connection: "VM consoles (VNC, serial)",
        protocol: "local Unix socket, relayed as WebSocket by agent and server",
        config_key: None,
        fixed: "none opened",
        seed: "VMRC 5900, VMConnect 2179, RDP 3389",
    },
    PortUse {
        connection: "server to PostgreSQL (when used)",
        protocol: "PostgreSQL wire",
        config_key: Some("database.url"),
        fixed: "",
        seed: "SQL 1433",
    },
    PortUse {
        connection: "p2v source to library",
        protocol: "HTTPS (transfer)",
        config_key: Some("p2v.library_url"),
        fixed: "",
        seed: "DCOM 135 (inbound)",
    },
    PortUse {
        connection: "metrics scrape",
        protocol: "HTTPS GET /metrics",
        config_key: Some("server.api_port"),
        fixed: "",
        seed: "OpsMgr",
    },
];

/// The port table as Markdown with each row's default value: the text of `docs/ports.md`.
pub fn markdown() -> String {
    let mut text = String::from(
        "# Drover ports\n\n\
         Generated from `crates/drover-api/src/ports.rs` (`PORT_TABLE`) and the settings in\n\
         `crates/drover-api/src/config.rs`; a test fails when this file is stale. Regenerate with\n\
         `DROVER_BLESS=1 cargo test -p drover-api ports`. `drover ports` prints the same table with\n\
         the values in force on a machine and where each was set.\n\n\
         Every setting can be changed in `drover.toml` (`[section] key = value`), by the environment\n\
         variable shown, or by a command-line flag.\n\n\
         | Connection | Protocol | Default | Config key | Environment | SCVMM 2008 |\n\
         |---|---|---|---|---|---|\n",
    );
    for row in PORT_TABLE {
        let (default, key, env) = match row.config_key {
            Some(key) => {
                let default = crate::config::SETTINGS
                    .iter()
                    .find(|setting| setting.key == key)
                    .map(|setting| setting.default)
                    .unwrap_or_default();
                let default = if default.is_empty() {
                    "(unset)"
                } else {
                    default
                };
                (
                    default,
                    format!("`{key}`"),
                    format!("`{}`", crate::config::env_name(key)),
                )
            }
            None => (row.fixed, "-".to_owned(), "-".to_owned()),
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.connection, row.protocol, default, key, env, row.seed
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_a_known_setting() {
        for row in PORT_TABLE {
            if let Some(key) = row.config_key {
                assert!(
                    crate::config::SETTINGS
                        .iter()
                        .any(|setting| setting.key == key),
                    "{key} is not a setting"
                );
            } else {
                assert!(
                    !row.fixed.is_empty(),
                    "{} has neither key nor fixed value",
                    row.connection
                );
            }
        }
    }

    #[test]
    fn ports_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ports.md");
        let expected = markdown();
        if std::env::var_os("DROVER_BLESS").is_some() {
            std::fs::write(&path, &expected).expect("write docs/ports.md");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/ports.md is stale: run DROVER_BLESS=1 cargo test -p drover-api ports"
        );
    }
}
