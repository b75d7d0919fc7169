//! Virtual networks and VM network adapters as the API shows them: the requests that make
//! networks, the NICs of a VM with their MAC and IP addresses, and user-mode port forwards.

use crate::id::NetworkId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The built-in network every host has: QEMU's user-mode networking (slirp), which needs no
/// change to the host's network. A VM created without `--network` gets one NIC on it.
pub const USER_NETWORK: &str = "user";

/// Prefix of the Linux bridge that carries a network on each host (`dr-NAME`).
pub const BRIDGE_PREFIX: &str = "dr-";

/// Longest Linux interface name (`IFNAMSIZ` is 16 with the final NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

/// The MAC prefix of every NIC Drover makes: QEMU's locally administered 52:54:00 and a Drover
/// byte, leaving 65536 addresses to the global pool.
pub const MAC_PREFIX: [u8; 4] = [0x52, 0x54, 0x00, 0xd0];

/// How a network reaches the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// A gateway address on the bridge and masquerading through the host.
    Nat,
    /// VMs reach each other and the DHCP server, nothing else.
    Isolated,
    /// The bridge enslaves an uplink interface (or its 802.1Q sub-interface).
    Bridged,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 3] = [
        NetworkMode::Nat,
        NetworkMode::Isolated,
        NetworkMode::Bridged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Nat => "nat",
            NetworkMode::Isolated => "isolated",
            NetworkMode::Bridged => "bridged",
        }
    }

    pub fn parse(text: &str) -> Option<NetworkMode> {
        NetworkMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a network works on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkHostState {
    Ready,
    /// The host cannot carry the network (its uplink is missing, for example); see the reason.
    NeedsAttention,
}

impl NetworkHostState {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkHostState::Ready => "ready",
            NetworkHostState::NeedsAttention => "needs_attention",
        }
    }

    pub fn parse(text: &str) -> Option<NetworkHostState> {
        [NetworkHostState::Ready, NetworkHostState::NeedsAttention]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// How a network stands on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkHost {
    pub host_name: String,
    pub state: NetworkHostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkCreate {
    pub name: String,
    pub mode: NetworkMode,
    /// IPv4 CIDR, such as 10.10.0.0/24. Needed by `nat` and `isolated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Defaults to the subnet's first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `FIRST-LAST`; defaults to every address of the subnet above the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<String>,
    /// 802.1Q VLAN id (1-4094) on the uplink of a `bridged` network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Host interface a `bridged` network enslaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Carry the network between hosts over VXLAN on the management network.
    #[serde(default)]
    pub overlay: bool,
    /// Host group (id or name) whose subtree alone carries the network; every host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    pub mode: NetworkMode,
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
    pub overlay: bool,
    /// The Linux bridge that carries the network on each host.
    pub bridge: String,
    /// VXLAN network identifier of an overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The host group whose subtree alone carries the network (name); every host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Names of the VMs with a NIC on this network.
    #[serde(default)]
    pub vms: Vec<String>,
    /// The network on each host that realized it.
    #[serde(default)]
    pub hosts: Vec<NetworkHost>,
    pub created_at: DateTime<Utc>,
}

/// A VM's network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmNic {
    /// `nic0`, `nic1`, ...: the device's name inside QEMU too.
    pub name: String,
    /// Network name; [`USER_NETWORK`] for user-mode networking.
    pub network: String,
    pub mac: String,
    /// The address reserved for the NIC in the network's pool (a static DHCP lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The address the guest holds, from its host's DHCP lease (shown for one VM, when its host
    /// answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ip: Option<String>,
}

/// Body of `POST /api/v1/vms/{vm}/nics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NicAdd {
    /// Network name, or [`USER_NETWORK`].
    pub network: String,
}

/// The transport protocol of a port forward.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }

    pub fn parse(text: &str) -> Option<PortProtocol> {
        [PortProtocol::Tcp, PortProtocol::Udp]
            .into_iter()
            .find(|protocol| protocol.as_str() == text)
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TCP or UDP port of the guest reachable at `127.0.0.1:host_port` on the VM's host, through
/// its user-mode NIC. A host port is taken once per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
    /// TCP when absent (forwards saved before UDP existed).
    #[serde(default)]
    pub protocol: PortProtocol,
}

impl PortForward {
    /// Parses `HOSTPORT:GUESTPORT`, a TCP forward.
    pub fn parse(text: &str) -> Result<PortForward, String> {
        let invalid = || format!("'{text}' is not HOSTPORT:GUESTPORT with ports from 1 to 65535");
        let (host, guest) = text.split_once(':').ok_or_else(invalid)?;
        let port = |part: &str| part.parse::<u16>().ok().filter(|port| *port != 0);
        match (port(host), port(guest)) {
            (Some(host_port), Some(guest_port)) => Ok(PortForward {
                host_port,
                guest_port,
                protocol: PortProtocol::Tcp,
            }),
            _ => Err(invalid()),
        }
    }

    /// Whether this forward holds the same host socket as `other` (port and protocol).
    pub fn same_host_socket(&self, other: &PortForward) -> bool {
        self.host_port == other.host_port && self.protocol == other.protocol
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} 127.0.0.1:{} -> {}",
            self.protocol, self.host_port, self.guest_port
        )
    }
}

/// The tap of a VM's NIC on a bridge: `dt`, the first 8 hex digits of the VM's id and the NIC's
/// name (`nic0`), within the 15-byte interface name limit up to `nic99`.
pub fn tap_name(vm_id: crate::VmId, nic: &str) -> String {
    let id = vm_id.0.simple().to_string();
    format!("dt{}{nic}", &id[..8])
}

/// A MAC address of the pool as text: `52:54:00:d0:` and the two bytes of `index`.
pub fn pool_mac(index: u16) -> String {
    let [high, low] = index.to_be_bytes();
    let [a, b, c, d] = MAC_PREFIX;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{high:02x}:{low:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forwards_parse() {
        assert_eq!(
            PortForward::parse("8080:80"),
            Ok(PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: PortProtocol::Tcp,
            })
        );
        let saved_before_udp: PortForward =
            serde_json::from_str(r#"{"host_port": 1, "guest_port": 2}"#).expect("parses");
        assert_eq!(saved_before_udp.protocol, PortProtocol::Tcp);
        for protocol in [PortProtocol::Tcp, PortProtocol::Udp] {
            assert_eq!(PortProtocol::parse(protocol.as_str()), Some(protocol));
        }
        for bad in ["8080", "0:80", "80:0", "a:b", "70000:80", ":80", "1:2:3"] {
            assert!(PortForward::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_carry_the_drover_prefix() {
        assert_eq!(pool_mac(0), "52:54:00:d0:00:00");
        assert_eq!(pool_mac(0x1234), "52:54:00:d0:12:34");
        assert_eq!(pool_mac(u16::MAX), "52:54:00:d0:ff:ff");
    }

    #[test]
    fn modes_round_trip() {
        for mode in NetworkMode::ALL {
            assert_eq!(NetworkMode::parse(mode.as_str()), Some(mode));
        }
    }
}
