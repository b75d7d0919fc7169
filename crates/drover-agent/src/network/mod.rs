//! Virtual networks on this host: realizes the server's [`AgentNetwork`]s (a Linux bridge; by
//! mode a gateway address, nftables rules, an uplink or its 802.1Q sub-interface, a VXLAN tunnel
//! and a dnsmasq), plugs VM NICs in as taps, keeps each dnsmasq's static leases in step with the
//! VMs defined here, and re-adopts all of it after an agent restart without touching what runs.
//!
//! The tools are `ip`, `bridge`, `nft` and `dnsmasq`, run as commands rather than through
//! rtnetlink: no new dependency, every step is a line an operator can read and repeat, and each
//! takes a few milliseconds. Work runs on a blocking thread, one change at a time.

mod command;
mod dhcp;
mod firewall;

use drover_api::agent::{AgentNetwork, AgentNetworkStatus, AgentVmSpec, NicAttachment, NicLease};
use drover_api::network::NetworkHostState;
use drover_api::{NetworkId, NetworkMode};
use drover_hv::revert::Revert;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The spec of a realized network, in its directory.
const SPEC_FILE: &str = "spec.json";

/// MTU of an overlay's guest-facing links (VXLAN device, bridge, taps) and the one its DHCP
/// server offers (option 26): 1500 less the VXLAN encapsulation (50 bytes), so that a full
/// guest frame still fits the management network's 1500 once wrapped. Without it the VXLAN
/// device takes 1500 and every full frame leaves the host as two IP fragments.
const OVERLAY_MTU: u32 = 1450;

/// The MTU a network's guest-facing links get: [`OVERLAY_MTU`] on an overlay, the kernel's
/// default elsewhere.
fn guest_mtu(spec: &AgentNetwork) -> Option<u32> {
    spec.overlay.as_ref().map(|_| OVERLAY_MTU)
}

/// Sets a link's MTU.
fn set_mtu(link: &str, mtu: u32) -> Result<(), NetworkError> {
    command::run("ip", &["link", "set", link, "mtu", &mtu.to_string()])?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network bridge {0} is not realized on this host")]
    NotRealized(String),
    #[error("{0}")]
    Invalid(String),
}

/// The networks this host carries.
pub struct Networks {
    dir: PathBuf,
    vxlan_port: u16,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Realized networks by bridge.
    networks: BTreeMap<String, AgentNetwork>,
    /// Static leases by bridge: MAC to IP, from the VMs defined here.
    leases: BTreeMap<String, BTreeMap<String, String>>,
}

impl Networks {
    /// Loads the networks realized before (their specs in `data_dir/networks/BRIDGE/`); call
    /// [`Networks::readopt`] once the VMs' leases are known.
    pub fn open(data_dir: &Path, vxlan_port: u16) -> anyhow::Result<Arc<Networks>> {
        let dir = data_dir.join("networks");
        crate::store::create_private_dir(&dir)?;
        let mut state = State::default();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path().join(SPEC_FILE);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            match serde_json::from_str::<AgentNetwork>(&text) {
                Ok(spec) => {
                    state.networks.insert(spec.bridge.clone(), spec);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "unreadable network spec")
                }
            }
        }
        Ok(Arc::new(Networks {
            dir,
            vxlan_port,
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Networks) -> T + Send + 'static,
    ) -> T {
        let networks = self.clone();
        tokio::task::spawn_blocking(move || work(&networks))
            .await
            .expect("network work does not panic")
    }

    /// Brings every known network back after an agent restart: what exists is kept as is (no
    /// guest loses a packet), what is missing (after a host reboot) is made again.
    pub async fn readopt(self: &Arc<Self>) {
        self.blocking(|networks| {
            let specs: Vec<AgentNetwork> = networks.lock().networks.values().cloned().collect();
            for spec in specs {
                match networks.realize_now(&spec) {
                    Ok(status) if status.state == NetworkHostState::Ready => {
                        tracing::info!(bridge = %spec.bridge, "network re-adopted");
                    }
                    Ok(status) => tracing::warn!(bridge = %spec.bridge, reason = ?status.reason, "network needs attention"),
                    Err(error) => tracing::warn!(bridge = %spec.bridge, %error, "cannot re-adopt network"),
                }
            }
        })
        .await;
    }

    /// Realizes `spec` here (idempotent). A missing uplink is not an error: the answer says the
    /// network needs attention on this host, and nothing was made.
    pub async fn realize(
        self: &Arc<Self>,
        spec: AgentNetwork,
    ) -> Result<AgentNetworkStatus, NetworkError> {
        self.blocking(move |networks| networks.realize_now(&spec))
            .await
    }

    /// Removes the network `id` from this host (idempotent).
    pub async fn remove(self: &Arc<Self>, id: NetworkId) -> Result<(), NetworkError> {
        self.blocking(move |networks| networks.remove_now(id)).await
    }

    /// Makes the taps of `vm`'s NICs, each on its network's bridge, before the VM starts.
    pub async fn plug(self: &Arc<Self>, vm: AgentVmSpec) -> Result<(), NetworkError> {
        self.blocking(move |networks| networks.plug_now(&vm)).await
    }

    /// Removes `vm`'s taps and static leases (the VM is being deleted).
    pub async fn unplug(self: &Arc<Self>, vm: AgentVmSpec) {
        self.blocking(move |networks| {
            for (_, tap, _) in network_nics(&vm) {
                if command::link_exists(&tap) {
                    command::run_quietly("ip", &["link", "del", &tap]);
                }
            }
            networks.set_leases(&vm, false);
        })
        .await;
    }

    /// Adds `vm`'s static leases (a VM defined here, or found at start).
    pub async fn add_leases(self: &Arc<Self>, vm: AgentVmSpec) {
        self.blocking(move |networks| networks.set_leases(&vm, true))
            .await;
    }

    /// The addresses `vm`'s NICs hold according to the networks' DHCP leases.
    pub fn leases(&self, vm: &AgentVmSpec) -> Vec<NicLease> {
        network_nics(vm)
            .into_iter()
            .filter_map(|(bridge, _, nic)| {
                let files = dhcp::DhcpFiles::new(&self.dir.join(bridge));
                let ip = dhcp::leased_address(&files, &nic.mac)?;
                Some(NicLease {
                    nic: nic.name.clone(),
                    ip,
                })
            })
            .collect()
    }

    fn set_leases(&self, vm: &AgentVmSpec, present: bool) {
        let mut state = self.lock();
        for (bridge, _, nic) in network_nics(vm) {
            let NicAttachment::Network { ip: Some(ip), .. } = &nic.attachment else {
                continue;
            };
            let leases = state.leases.entry(bridge.clone()).or_default();
            if present {
                leases.insert(nic.mac.clone(), ip.clone());
            } else {
                leases.remove(&nic.mac);
            }
            let leases = leases.clone();
            if let Some(spec) = state.networks.get(&bridge)
                && dhcp::wanted(spec)
            {
                let files = dhcp::DhcpFiles::new(&self.dir.join(&bridge));
                if let Err(error) =
                    dhcp::write_hosts(&files, &leases).and_then(|()| dhcp::reload(&files))
                {
                    tracing::warn!(%bridge, %error, "cannot update the static leases");
                }
            }
        }
    }

    fn realize_now(&self, spec: &AgentNetwork) -> Result<AgentNetworkStatus, NetworkError> {
        let mut state = self.lock();
        if let Some(reason) = missing_uplink(spec) {
            return Ok(AgentNetworkStatus {
                state: NetworkHostState::NeedsAttention,
                reason: Some(reason),
            });
        }
        let dir = self.dir.join(&spec.bridge);
        crate::store::create_private_dir(&dir).map_err(|error| NetworkError::Io {
            path: dir.clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
        let bridge = spec.bridge.clone();
        let fresh = !command::link_exists(&bridge);
        let mut revert = Revert::new();
        if fresh {
            command::run("ip", &["link", "add", "name", &bridge, "type", "bridge"])?;
            let made = bridge.clone();
            revert.push(move || command::run_quietly("ip", &["link", "del", &made]));
        }
        if spec.mode != NetworkMode::Bridged
            && let (Some(gateway), Some(subnet)) = (&spec.gateway, &spec.subnet)
        {
            let prefix = subnet.rsplit_once('/').map_or("24", |(_, prefix)| prefix);
            command::run(
                "ip",
                &[
                    "addr",
                    "replace",
                    &format!("{gateway}/{prefix}"),
                    "dev",
                    &bridge,
                ],
            )?;
        }
        if spec.mode == NetworkMode::Bridged
            && let Some(status) = self.attach_uplink(spec, &mut revert)?
        {
            return Ok(status);
        }
        let vxlan = match &spec.overlay {
            Some(overlay) => Some(self.attach_overlay(spec, overlay, &mut revert)?),
            None => None,
        };
        if let Some(mtu) = guest_mtu(spec) {
            set_mtu(&bridge, mtu)?;
        }
        command::run("ip", &["link", "set", &bridge, "up"])?;
        if let Some(script) = firewall::ruleset(spec, vxlan.as_deref()) {
            if spec.mode == NetworkMode::Nat {
                enable_forwarding()?;
            }
            firewall::apply(&script)?;
            if fresh {
                let made = spec.clone();
                revert.push(move || firewall::remove(&made));
            }
        }
        if dhcp::wanted(spec) {
            let files = dhcp::DhcpFiles::new(&dir);
            let leases = state.leases.get(&bridge).cloned().unwrap_or_default();
            dhcp::write_hosts(&files, &leases)?;
            dhcp::ensure(spec, &files, guest_mtu(spec))?;
            if fresh {
                revert.push(move || dhcp::stop(&files));
            }
        }
        let path = dir.join(SPEC_FILE);
        let text = serde_json::to_string_pretty(spec)
            .map_err(|error| NetworkError::Invalid(format!("cannot encode the spec: {error}")))?;
        std::fs::write(&path, text).map_err(|source| NetworkError::Io { path, source })?;
        revert.commit();
        state.networks.insert(bridge, spec.clone());
        Ok(AgentNetworkStatus {
            state: NetworkHostState::Ready,
            reason: None,
        })
    }

    /// Puts the uplink (or its VLAN sub-interface) on the bridge; `Some` when the host cannot.
    fn attach_uplink(
        &self,
        spec: &AgentNetwork,
        revert: &mut Revert,
    ) -> Result<Option<AgentNetworkStatus>, NetworkError> {
        let Some(uplink) = &spec.uplink else {
            return Ok(None);
        };
        let port = match spec.vlan {
            Some(vlan) => {
                let port = format!("{uplink}.{vlan}");
                if !command::link_exists(&port) {
                    let made = command::run(
                        "ip",
                        &[
                            "link",
                            "add",
                            "link",
                            uplink,
                            "name",
                            &port,
                            "type",
                            "vlan",
                            "id",
                            &vlan.to_string(),
                        ],
                    );
                    match made {
                        Ok(_) => {}
                        // The kernel has no 802.1Q support (no 8021q module): this host cannot
                        // carry VLANs, which is the host's to fix, not a failure of the request.
                        Err(NetworkError::Command { output, .. })
                            if output.contains("Unknown device type") =>
                        {
                            return Ok(Some(AgentNetworkStatus {
                                state: NetworkHostState::NeedsAttention,
                                reason: Some(format!(
                                    "this host's kernel cannot make the 802.1Q sub-interface {port} (no 8021q support)"
                                )),
                            }));
                        }
                        Err(error) => return Err(error),
                    }
                    let made = port.clone();
                    revert.push(move || command::run_quietly("ip", &["link", "del", &made]));
                }
                port
            }
            None => uplink.clone(),
        };
        if command::master_of(&port).as_deref() != Some(spec.bridge.as_str()) {
            command::run("ip", &["link", "set", &port, "master", &spec.bridge])?;
            let freed = port.clone();
            revert.push(move || command::run_quietly("ip", &["link", "set", &freed, "nomaster"]));
        }
        command::run("ip", &["link", "set", uplink, "up"])?;
        command::run("ip", &["link", "set", &port, "up"])?;
        Ok(None)
    }

    /// Makes the network's VXLAN device on the bridge and points it at the peers; its name.
    fn attach_overlay(
        &self,
        spec: &AgentNetwork,
        overlay: &drover_api::agent::AgentOverlay,
        revert: &mut Revert,
    ) -> Result<String, NetworkError> {
        let vxlan = format!("dv{}", overlay.vni);
        if !command::link_exists(&vxlan) {
            command::run(
                "ip",
                &[
                    "link",
                    "add",
                    &vxlan,
                    "type",
                    "vxlan",
                    "id",
                    &overlay.vni.to_string(),
                    "dstport",
                    &self.vxlan_port.to_string(),
                    "local",
                    &overlay.local,
                ],
            )?;
            let made = vxlan.clone();
            revert.push(move || command::run_quietly("ip", &["link", "del", &made]));
        }
        set_mtu(&vxlan, OVERLAY_MTU)?;
        if command::master_of(&vxlan).as_deref() != Some(spec.bridge.as_str()) {
            command::run("ip", &["link", "set", &vxlan, "master", &spec.bridge])?;
        }
        command::run("ip", &["link", "set", &vxlan, "up"])?;
        // Head-end replication: broadcasts and unknown unicast go to every peer.
        let shown = command::run("bridge", &["fdb", "show", "dev", &vxlan])?;
        let present: Vec<String> = shown
            .lines()
            .filter(|line| line.starts_with("00:00:00:00:00:00 "))
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|word| *word == "dst")?;
                words.next().map(str::to_owned)
            })
            .collect();
        for peer in &overlay.peers {
            if !present.contains(peer) {
                command::run(
                    "bridge",
                    &[
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        &vxlan,
                        "dst",
                        peer,
                    ],
                )?;
            }
        }
        for gone in present.iter().filter(|peer| !overlay.peers.contains(peer)) {
            command::run_quietly(
                "bridge",
                &[
                    "fdb",
                    "del",
                    "00:00:00:00:00:00",
                    "dev",
                    &vxlan,
                    "dst",
                    gone,
                ],
            );
        }
        Ok(vxlan)
    }

    fn remove_now(&self, id: NetworkId) -> Result<(), NetworkError> {
        let mut state = self.lock();
        let Some(spec) = state.networks.values().find(|spec| spec.id == id).cloned() else {
            return Ok(());
        };
        let dir = self.dir.join(&spec.bridge);
        dhcp::stop(&dhcp::DhcpFiles::new(&dir));
        firewall::remove(&spec);
        if let Some(overlay) = &spec.overlay {
            command::run_quietly("ip", &["link", "del", &format!("dv{}", overlay.vni)]);
        }
        if let Some(uplink) = &spec.uplink {
            match spec.vlan {
                Some(vlan) => {
                    command::run_quietly("ip", &["link", "del", &format!("{uplink}.{vlan}")])
                }
                None => command::run_quietly("ip", &["link", "set", uplink, "nomaster"]),
            }
        }
        if command::link_exists(&spec.bridge) {
            command::run("ip", &["link", "del", &spec.bridge])?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NetworkError::Io { path: dir, source }),
        }
        state.networks.remove(&spec.bridge);
        state.leases.remove(&spec.bridge);
        tracing::info!(bridge = %spec.bridge, "network removed");
        Ok(())
    }

    fn plug_now(&self, vm: &AgentVmSpec) -> Result<(), NetworkError> {
        let state = self.lock();
        let mut revert = Revert::new();
        for (bridge, tap, _) in network_nics(vm) {
            let Some(network) = state
                .networks
                .get(&bridge)
                .filter(|_| command::link_exists(&bridge))
            else {
                return Err(NetworkError::NotRealized(bridge));
            };
            if !command::link_exists(&tap) {
                command::run("ip", &["tuntap", "add", "dev", &tap, "mode", "tap"])?;
                let made = tap.clone();
                revert.push(move || command::run_quietly("ip", &["link", "del", &made]));
            }
            if let Some(mtu) = guest_mtu(network) {
                set_mtu(&tap, mtu)?;
            }
            if command::master_of(&tap).as_deref() != Some(bridge.as_str()) {
                command::run("ip", &["link", "set", &tap, "master", &bridge])?;
            }
            command::run("ip", &["link", "set", &tap, "up"])?;
        }
        revert.commit();
        Ok(())
    }
}

/// The NICs of `vm` on a network: bridge, tap and the NIC.
fn network_nics(vm: &AgentVmSpec) -> Vec<(String, String, &drover_api::agent::AgentNic)> {
    vm.nics
        .iter()
        .filter_map(|nic| match &nic.attachment {
            NicAttachment::Network { bridge, tap, .. } => Some((bridge.clone(), tap.clone(), nic)),
            NicAttachment::User => None,
        })
        .collect()
}

/// Why a bridged network cannot be realized here, when its uplink is missing.
fn missing_uplink(spec: &AgentNetwork) -> Option<String> {
    let uplink = spec.uplink.as_ref()?;
    (!command::link_exists(uplink))
        .then(|| format!("the uplink interface {uplink} does not exist on this host"))
}

/// NAT routes the guests' packets through the host.
fn enable_forwarding() -> Result<(), NetworkError> {
    let path = PathBuf::from("/proc/sys/net/ipv4/ip_forward");
    std::fs::write(&path, "1").map_err(|source| NetworkError::Io { path, source })
}

/// A `/24` network named `lab` for the unit tests of this module's parts.
#[cfg(test)]
fn sample_network(mode: NetworkMode) -> AgentNetwork {
    AgentNetwork {
        id: NetworkId::new(),
        name: "lab".into(),
        mode,
        bridge: "dr-lab".into(),
        subnet: Some("10.10.0.0/24".into()),
        gateway: Some("10.10.0.1".into()),
        dhcp_start: Some("10.10.0.2".into()),
        dhcp_end: Some("10.10.0.254".into()),
        vlan: None,
        uplink: None,
        overlay: None,
    }
}
