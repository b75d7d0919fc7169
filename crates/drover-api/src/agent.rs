//! The agent protocol: what the server and an agent say to each other on the agent's control
//! port (8101, mutual TLS). The agent answers errors with the same [`crate::ErrorBody`] as the API.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/enroll` (before enrollment only, no client certificate) | [`EnrollBegin`] | [`EnrollCsr`] |
//! | `POST /v1/enroll/complete` (before enrollment only) | [`EnrollComplete`] | 204 |
//! | `GET /v1/host` | | [`AgentHostInfo`] |
//! | `GET /v1/events` | | NDJSON stream of [`AgentEvent`], a [`AgentEvent::Snapshot`] first |
//! | `GET /v1/vms` | | `Vec<VmRuntime>` |
//! | `POST /v1/vms/validate` | [`AgentVmSpec`] | 204, or 4xx naming the missing file |
//! | `PUT /v1/vms/{id}` | [`AgentVmSpec`] | [`VmRuntime`] (defines the VM, makes its disk; idempotent) |
//! | `POST /v1/vms/{id}/actions` | [`crate::VmActionRequest`] | [`VmRuntime`] once the action is done |
//! | `PUT /v1/networks/{id}` | [`AgentNetwork`] | [`AgentNetworkStatus`] (realizes the network; idempotent) |
//! | `DELETE /v1/networks/{id}` | | 204 (removes bridge, rules and DHCP server; idempotent) |
//! | `POST /v1/vms/{id}/nics` | [`AgentNic`] | 204 (hot-plugged when the VM runs; idempotent) |
//! | `DELETE /v1/vms/{id}/nics/{name}` | | 204 (hot-unplugged when the VM runs; idempotent) |
//! | `GET /v1/vms/{id}/leases` | | `Vec<NicLease>`: the addresses the guest's NICs hold, from the DHCP leases |
//! | `POST /v1/vms/{id}/port-forwards` | [`crate::PortForward`] | 204 (kept in the spec; applied at once when the VM runs; idempotent) |
//! | `DELETE /v1/vms/{id}/port-forwards/{protocol}/{host_port}` | | 204 (removed from the spec and, when the VM runs, from QEMU; idempotent) |
//! | `DELETE /v1/vms/{id}` | | 204 (ends QEMU, removes the VM's files, or what a fetch left of a VM never defined here; idempotent) |
//! | `GET /v1/vms/{id}/checkpoints` | | `Vec<AgentCheckpoint>`: the checkpoints on the VM's disk |
//! | `POST /v1/vms/{id}/checkpoints` | [`crate::checkpoint::AgentCheckpointCreate`] | [`crate::checkpoint::AgentCheckpointDone`] (with memory when the VM runs) |
//! | `POST /v1/vms/{id}/checkpoints/{tag}/restore` | | [`crate::checkpoint::AgentCheckpointDone`] |
//! | `DELETE /v1/vms/{id}/checkpoints/{tag}` | | 204 (idempotent) |
//! | `GET /v1/vms/{id}/console` | | WebSocket: binary frames both ways, the guest's serial port |

use crate::host::Accelerator;
use crate::id::{NetworkId, VmId};
use crate::network::{NetworkHostState, NetworkMode, PortForward};
use crate::vm::{VmDisk, VmState};
use serde::{Deserialize, Serialize};

/// What an agent says of its machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    /// Free space where the agent keeps VM disks.
    pub disk_free_bytes: u64,
    /// CPU load over the last minute as a share of all CPUs, 0 to 100 (from `/proc/loadavg`).
    #[serde(default)]
    pub cpu_load_percent: u32,
    pub accelerator: Accelerator,
    pub agent_version: String,
    /// `host`, `library`.
    pub roles: Vec<String>,
    /// The transfer endpoint's port (HTTPS, mutual TLS); `None` before issue 3's agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_port: Option<u16>,
}

/// Everything the agent needs to run a VM. The server's database is the source of truth; the
/// agent keeps a copy next to the VM's disk so it can re-adopt the VM after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVmSpec {
    pub id: VmId,
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: VmDisk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// A cloud-init NoCloud seed the driver attaches as a read-only disk labelled `cidata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<crate::vm::CloudInitSeed>,
    /// The VM's NICs in order (`nic0` first).
    #[serde(default)]
    pub nics: Vec<AgentNic>,
    /// Forwards to the guest through the first user-mode NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<PortForward>,
    /// Data disks, boot order, machine type.
    #[serde(default, flatten)]
    pub devices: crate::devices::VmDevices,
}

impl AgentVmSpec {
    /// The NIC that carries the port forwards: the first on user-mode networking.
    pub fn user_nic(&self) -> Option<&AgentNic> {
        self.nics
            .iter()
            .find(|nic| nic.attachment == NicAttachment::User)
    }
}

/// One network adapter of a VM, as its host builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNic {
    /// `nic0`, `nic1`, ...: the QEMU device id; its backend is `net0`, `net1`, ...
    pub name: String,
    pub mac: String,
    pub attachment: NicAttachment,
}

/// What a NIC is plugged into on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NicAttachment {
    /// QEMU's user-mode networking (slirp): no host interface at all.
    User,
    /// A tap device on the network's bridge. The server realizes the network on the host
    /// (`PUT /v1/networks/{id}`) before it defines or starts a VM that uses it.
    Network {
        /// The network's bridge, which also names the network on the host.
        bridge: String,
        /// The tap's interface name (see [`crate::network::tap_name`]).
        tap: String,
        /// The NIC's static lease on the network, when the network has a DHCP range.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
}

/// A virtual network as a host realizes it: a bridge, and by mode an address, NAT rules, an
/// uplink, a VXLAN tunnel and a DHCP server whose static leases come from the VMs' NICs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNetwork {
    pub id: NetworkId,
    pub name: String,
    pub mode: NetworkMode,
    pub bridge: String,
    /// IPv4 CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<AgentOverlay>,
}

/// How an overlay network reaches the other hosts that carry it: VXLAN with head-end
/// replication to each peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOverlay {
    /// VXLAN network identifier; the UDP port is each agent's `network.vxlan_port`.
    pub vni: u32,
    /// This host's management address, the tunnel's source.
    pub local: String,
    /// The management addresses of the other hosts that carry the network.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// Answer of `PUT /v1/networks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNetworkStatus {
    pub state: NetworkHostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The address a guest's NIC holds, as the host's DHCP server leased it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicLease {
    pub nic: String,
    pub ip: String,
}

/// A VM's state as its host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRuntime {
    pub vm_id: VmId,
    pub state: VmState,
    /// Why, when the state is Failed (for example "QEMU exited without a shutdown request").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One line of the agent's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum AgentEvent {
    /// First line on every connection: the whole truth, so that a reconnecting server resyncs.
    Snapshot {
        host: AgentHostInfo,
        vms: Vec<VmRuntime>,
    },
    /// A VM changed state; sent the moment the agent sees it.
    Vm(VmRuntime),
    /// Fresh host figures; also the heartbeat, sent every [`HEARTBEAT_SECONDS`].
    Host(AgentHostInfo),
}

/// How often an agent sends [`AgentEvent::Host`] on its event stream.
pub const HEARTBEAT_SECONDS: u64 = 2;

/// First enrollment call: the server proves it knows the agent's one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollBegin {
    pub code: String,
}

/// The agent's answer: a certificate signing request for a key that never leaves the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollCsr {
    pub csr_pem: String,
    pub hostname: String,
}

/// Second enrollment call: the signed certificate and the CA the agent trusts from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollComplete {
    pub code: String,
    pub ca_pem: String,
    pub cert_pem: String,
}
