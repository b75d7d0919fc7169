//! Network jobs: create (check, save, realize on every responding host) and delete (refused
//! while VMs use it; removed from every host that realized it). Also what VM jobs call to make
//! sure a network exists on a VM's host before the VM is defined there.

use super::{JobRun, Plan};
use crate::agents::address_host;
use crate::db;
use crate::http::ApiError;
use crate::ipam;
use crate::placement;
use crate::state::AppState;
use chrono::Utc;
use drover_api::agent::{AgentNetwork, AgentNetworkStatus, AgentOverlay};
use drover_api::network::NetworkHostState;
use drover_api::{
    Event, Host, HostGroupId, HostState, JobTarget, Network, NetworkCreate, NetworkId,
};

fn target(network_id: NetworkId, name: &str) -> JobTarget {
    JobTarget {
        kind: "network".to_owned(),
        id: network_id.to_string(),
        name: name.to_owned(),
    }
}

/// A checked create request: the network it makes and the group it is scoped to.
struct Checked {
    network: Network,
    group: Option<HostGroupId>,
}

/// Checks a create request against the rules, the group tree and the other networks.
async fn check(
    state: &AppState,
    network_id: NetworkId,
    request: &NetworkCreate,
) -> Result<Checked, ApiError> {
    let addressing =
        ipam::plan(request).map_err(|ipam::Invalid(message)| ApiError::InvalidNetwork(message))?;
    let group = match &request.group {
        Some(name) => {
            let tree = db::hostgroups::tree(&state.db).await?;
            let group = tree
                .find(name)
                .ok_or_else(|| ApiError::HostGroupNotFound(name.clone()))?;
            Some((group.id, group.name.clone()))
        }
        None => None,
    };
    if let Some(existing) = db::networks::get(&state.db, &request.name).await?
        && existing.id != network_id
    {
        return Err(ApiError::NetworkExists(request.name.clone()));
    }
    if let Some(subnet) = &addressing.subnet {
        let others = db::networks::subnets(&state.db).await?;
        let others = others
            .iter()
            .filter(|(name, _)| *name != request.name)
            .map(|(name, subnet)| (name.as_str(), subnet.as_str()));
        if let Some((other, other_subnet)) = ipam::overlapping(subnet, others) {
            return Err(ApiError::SubnetOverlap {
                subnet: subnet.to_string(),
                other: other.to_owned(),
                other_subnet: other_subnet.to_string(),
            });
        }
    }
    let (dhcp_start, dhcp_end) = addressing
        .dhcp
        .map(|(start, end)| (start.to_string(), end.to_string()))
        .unzip();
    let (group_id, group_name) = group.unzip();
    let network = Network {
        id: network_id,
        name: request.name.clone(),
        mode: request.mode,
        subnet: addressing.subnet.map(|subnet| subnet.to_string()),
        gateway: addressing.gateway.map(|gateway| gateway.to_string()),
        dhcp_start,
        dhcp_end,
        vlan: request.vlan,
        uplink: request.uplink.clone(),
        overlay: request.overlay,
        bridge: addressing.bridge,
        vni: None,
        group: group_name,
        vms: Vec::new(),
        hosts: Vec::new(),
        created_at: Utc::now(),
    };
    Ok(Checked {
        network,
        group: group_id,
    })
}

pub(super) async fn prepare_create(
    state: &AppState,
    network_id: NetworkId,
    request: &NetworkCreate,
) -> Result<Plan, ApiError> {
    check(state, network_id, request).await?;
    Ok(Plan {
        description: format!("Create {} network {}", request.mode, request.name),
        target: target(network_id, &request.name),
        done: Vec::new(),
        steps: vec![
            "Save the network",
            if request.group.is_some() {
                "Realize the network on every host of its group"
            } else {
                "Realize the network on every host"
            },
        ],
    })
}

pub(super) async fn run_create(
    state: &AppState,
    run: &mut JobRun,
    network_id: NetworkId,
    request: NetworkCreate,
) -> Result<(), ApiError> {
    let network = run
        .step(async {
            // Checked again: another network may have taken the name or subnet meanwhile.
            let Checked { network, group } = check(state, network_id, &request).await?;
            db::networks::insert(&state.db, &network, group)
                .await
                .map_err(|error| match error {
                    db::DbError::Duplicate { .. } => ApiError::NetworkExists(network.name.clone()),
                    other => other.into(),
                })?;
            publish(state, network_id).await
        })
        .await?;
    let realized = run
        .step(async {
            let tree = db::hostgroups::tree(&state.db).await?;
            let hosts: Vec<Host> = db::hosts::all(&state.db)
                .await?
                .into_iter()
                .filter(|host| {
                    host.state == HostState::Responding
                        && placement::network::in_scope(&network, &tree, host.group_id)
                })
                .collect();
            realize_on(state, &network, &hosts).await
        })
        .await;
    if realized.is_err() {
        // Nothing half-made: the hosts that took it were undone by realize_on; the row goes.
        if let Err(error) = db::networks::delete_unused(&state.db, network_id).await {
            tracing::error!(error = ?anyhow::Error::from(error), %network_id, "cannot delete the network's row");
        }
    }
    realized
}

/// Tells the event stream how the network stands now; the network.
async fn publish(state: &AppState, network_id: NetworkId) -> Result<Network, ApiError> {
    let network = find(state, network_id).await?;
    state.publish(Event::NetworkChanged(network.clone()));
    Ok(network)
}

/// Records how `network` stands on `host` after the host's agent realized it.
async fn record_host_state(
    state: &AppState,
    network_id: NetworkId,
    host: &Host,
    status: &AgentNetworkStatus,
) -> Result<(), ApiError> {
    db::networks::set_host_state(
        &state.db,
        network_id,
        host.id,
        status.state,
        status.reason.as_deref(),
    )
    .await?;
    publish(state, network_id).await?;
    Ok(())
}

async fn find(state: &AppState, network_id: NetworkId) -> Result<Network, ApiError> {
    db::networks::get(&state.db, &network_id.to_string())
        .await?
        .ok_or_else(|| ApiError::NetworkNotFound(network_id.to_string()))
}

/// The network as `host` realizes it; an overlay's peers are the other hosts in `carriers`.
fn agent_network(network: &Network, host: &Host, carriers: &[Host]) -> AgentNetwork {
    let management = |host: &Host| {
        address_host(&host.address)
            .unwrap_or(&host.address)
            .to_owned()
    };
    AgentNetwork {
        id: network.id,
        name: network.name.clone(),
        mode: network.mode,
        bridge: network.bridge.clone(),
        subnet: network.subnet.clone(),
        gateway: network.gateway.clone(),
        dhcp_start: network.dhcp_start.clone(),
        dhcp_end: network.dhcp_end.clone(),
        vlan: network.vlan,
        uplink: network.uplink.clone(),
        overlay: network.vni.map(|vni| AgentOverlay {
            vni,
            local: management(host),
            peers: carriers
                .iter()
                .filter(|peer| peer.id != host.id)
                .map(management)
                .collect(),
        }),
    }
}

/// Realizes `network` on each of `hosts` and records how it stands there. When one host fails
/// outright (not a missing uplink, which is recorded as Needs Attention), the hosts done so far
/// are undone and the error returned.
async fn realize_on(state: &AppState, network: &Network, hosts: &[Host]) -> Result<(), ApiError> {
    let mut done: Vec<&Host> = Vec::new();
    for host in hosts {
        let spec = agent_network(network, host, hosts);
        match state.agents.at(&host.address).put_network(&spec).await {
            Ok(status) => {
                record_host_state(state, network.id, host, &status).await?;
                done.push(host);
            }
            Err(error) => {
                for host in done {
                    if let Err(undo) = state
                        .agents
                        .at(&host.address)
                        .delete_network(network.id)
                        .await
                    {
                        tracing::warn!(error = ?anyhow::Error::from(undo), host = %host.name, "cannot undo the network on the host");
                    }
                }
                return Err(error.into());
            }
        }
    }
    Ok(())
}

/// The hosts that carry `network` (those that realized it).
async fn carriers(state: &AppState, network: &Network) -> Result<Vec<Host>, ApiError> {
    let mut hosts = Vec::new();
    for entry in &network.hosts {
        if let Some(host) = db::hosts::get(&state.db, &entry.host_name).await? {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Makes sure `network` works on `host` before a VM there uses it: realizes it when the host
/// has not yet (a host added after the network was made), telling an overlay's other hosts of
/// their new peer. Fails with the reason when the host cannot carry the network, or is outside
/// the network's group.
pub(super) async fn ensure_on_host(
    state: &AppState,
    network_id: NetworkId,
    host: &Host,
) -> Result<(), ApiError> {
    let network = find(state, network_id).await?;
    let tree = db::hostgroups::tree(&state.db).await?;
    if let Some(group) = &network.group
        && !placement::network::in_scope(&network, &tree, host.group_id)
    {
        return Err(ApiError::NetworkNotInGroup {
            network: network.name.clone(),
            group: group.clone(),
            host: host.name.clone(),
        });
    }
    let mut hosts = carriers(state, &network).await?;
    if !hosts.iter().any(|carrier| carrier.id == host.id) {
        hosts.push(host.clone());
        let others: Vec<Host> = if network.vni.is_some() {
            hosts.clone()
        } else {
            vec![host.clone()]
        };
        for carrier in &others {
            let spec = agent_network(&network, carrier, &hosts);
            let status = state.agents.at(&carrier.address).put_network(&spec).await?;
            record_host_state(state, network.id, carrier, &status).await?;
        }
    }
    let network = find(state, network_id).await?;
    match network
        .hosts
        .iter()
        .find(|entry| entry.host_name == host.name)
    {
        Some(entry) if entry.state == NetworkHostState::NeedsAttention => {
            Err(ApiError::NetworkNeedsAttention {
                network: network.name,
                host: host.name.clone(),
                reason: entry.reason.clone().unwrap_or_default(),
            })
        }
        _ => Ok(()),
    }
}

pub(super) async fn prepare_delete(
    state: &AppState,
    network_id: NetworkId,
) -> Result<Plan, ApiError> {
    let network = find(state, network_id).await?;
    refuse_in_use(&network)?;
    Ok(Plan {
        description: format!("Delete network {}", network.name),
        target: target(network_id, &network.name),
        done: Vec::new(),
        steps: vec![
            "Remove the network from its hosts",
            "Remove the network from Drover",
        ],
    })
}

fn refuse_in_use(network: &Network) -> Result<(), ApiError> {
    if network.vms.is_empty() {
        return Ok(());
    }
    Err(ApiError::NetworkInUse {
        network: network.name.clone(),
        vms: network.vms.join(", "),
    })
}

pub(super) async fn run_delete(
    state: &AppState,
    run: &mut JobRun,
    network_id: NetworkId,
) -> Result<(), ApiError> {
    let network = find(state, network_id).await?;
    refuse_in_use(&network)?;
    run.step(async {
        for host in carriers(state, &network).await? {
            state
                .agents
                .at(&host.address)
                .delete_network(network_id)
                .await?;
        }
        Ok(())
    })
    .await?;
    run.step(async {
        if db::networks::delete_unused(&state.db, network_id).await? {
            state.publish(Event::NetworkDeleted(network_id));
            return Ok(());
        }
        // A VM took a NIC on it meanwhile; its hosts get it back when that VM is defined.
        refuse_in_use(&find(state, network_id).await?)
    })
    .await
}

/// A network a host carries that a move to another group takes out of the network's scope,
/// with the VMs on the host that use it.
pub(super) struct LeftBehind {
    network: Network,
    vms: Vec<String>,
}

/// The networks `host` carries whose group scope does not hold `group_id`.
pub(super) async fn out_of_scope(
    state: &AppState,
    host: &Host,
    group_id: HostGroupId,
) -> Result<Vec<LeftBehind>, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let mut left = Vec::new();
    for network in db::networks::carried_by(&state.db, host.id).await? {
        if placement::network::in_scope(&network, &tree, group_id) {
            continue;
        }
        let vms = db::networks::vms_on_host(&state.db, network.id, host.id).await?;
        left.push(LeftBehind { network, vms });
    }
    Ok(left)
}

/// Refuses to take `host` out of a network's scope while VMs on the host use the network.
pub(super) fn refuse_left_in_use(host: &Host, left: &[LeftBehind]) -> Result<(), ApiError> {
    match left.iter().find(|entry| !entry.vms.is_empty()) {
        Some(entry) => Err(ApiError::NetworkInUseOnHost {
            host: host.name.clone(),
            network: entry.network.name.clone(),
            group: entry.network.group.clone().unwrap_or_default(),
            vms: entry.vms.join(", "),
        }),
        None => Ok(()),
    }
}

/// Removes each network of `left` from `host` (bridge, DHCP server, rules, tunnel), forgets
/// that the host carried it, and tells an overlay's remaining hosts that the peer is gone.
pub(super) async fn give_up(
    state: &AppState,
    host: &Host,
    left: Vec<LeftBehind>,
) -> Result<(), ApiError> {
    for LeftBehind { network, .. } in left {
        state
            .agents
            .at(&host.address)
            .delete_network(network.id)
            .await?;
        db::networks::forget_host(&state.db, network.id, host.id).await?;
        let remaining = carriers(state, &find(state, network.id).await?).await?;
        if network.vni.is_some() {
            for carrier in &remaining {
                let spec = agent_network(&network, carrier, &remaining);
                state.agents.at(&carrier.address).put_network(&spec).await?;
            }
        }
        publish(state, network.id).await?;
    }
    Ok(())
}
