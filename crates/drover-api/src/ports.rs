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
