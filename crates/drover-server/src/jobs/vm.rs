//! VM jobs: create (with an optional start), power actions and delete. A create that fails at
//! any step undoes everything: the agent forgets the VM and its files, the row goes.

pub(super) mod cdrom;
mod store;

pub(crate) use store::deploy_host;
pub(super) use store::{
    describe_fetch, fetch_from, prepare_deploy, prepare_store, run_deploy, run_store,
};

use super::{JobRun, Plan};
use crate::db;
use crate::http::ApiError;
use crate::placement::{self, Needs, rating::Demand};
use crate::state::AppState;
use chrono::Utc;
use drover_api::agent::{AgentNic, AgentVmSpec, NicAttachment};
use drover_api::network::{PortProtocol, USER_NETWORK, tap_name};
use drover_api::{
    CloudInitSeed, Event, Host, HostState, JobTarget, Network, PlacementGoal, PortForward, Vm,
    VmAction, VmCreate, VmDevices, VmId, VmNic, VmState,
};

/// Smallest memory a VM may have; below it no guest kernel boots.
pub const MIN_MEMORY_MIB: u64 = 64;

pub(super) const CREATE_STEP: &str = "Create disk and configuration on host";
const START_STEP: &str = "Start virtual machine";

pub(super) fn target(vm_id: VmId, name: &str) -> JobTarget {
    JobTarget {
        kind: "vm".to_owned(),
        id: vm_id.to_string(),
        name: name.to_owned(),
    }
}

pub(super) fn agent_spec(vm: &Vm, seed: Option<CloudInitSeed>, devices: VmDevices) -> AgentVmSpec {
    AgentVmSpec {
        id: vm.id,
        name: vm.name.clone(),
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        disk: vm.disk.clone(),
        kernel: vm.kernel.clone(),
        initrd: vm.initrd.clone(),
        cmdline: vm.cmdline.clone(),
        nics: vm.nics.iter().map(|nic| agent_nic(vm.id, nic)).collect(),
        port_forwards: vm.port_forwards.clone(),
        seed,
        devices,
    }
}

/// Refuses to move a VM with checkpoints live: the mirror copies the disks' current state
/// without their internal snapshots (Proxmox refuses this too). Moving it stopped copies whole
/// disks, checkpoints included.
pub(super) async fn check_live_movable(state: &AppState, vm: &Vm) -> Result<(), ApiError> {
    if db::checkpoints::count(&state.db, vm.id).await? > 0 {
        return Err(ApiError::VmNotMovable {
            vm: vm.name.clone(),
            reason: "it has checkpoints, which a live migration would not carry".to_owned(),
        });
    }
    Ok(())
}

/// The spec of an existing VM for a host that takes it over (migration, deploy), with its seed
/// and devices from the database.
pub(super) async fn moved_agent_spec(state: &AppState, vm: &Vm) -> Result<AgentVmSpec, ApiError> {
    let devices = db::vms::devices(&state.db, vm.id).await?;
    let seed = db::vms::seed(&state.db, vm.id).await?;
    Ok(agent_spec(vm, seed, devices))
}

/// A NIC as its host builds it.
fn agent_nic(vm_id: VmId, nic: &VmNic) -> AgentNic {
    AgentNic {
        name: nic.name.clone(),
        mac: nic.mac.clone(),
        attachment: if nic.network == USER_NETWORK {
            NicAttachment::User
        } else {
            NicAttachment::Network {
                bridge: crate::ipam::bridge_name(&nic.network),
                tap: tap_name(vm_id, &nic.name),
                ip: nic.ip.clone(),
            }
        },
    }
}

/// The network a NIC request names (`None` = user-mode).
async fn named_network(state: &AppState, name: &str) -> Result<Option<Network>, ApiError> {
    if name == USER_NETWORK {
        return Ok(None);
    }
    db::networks::get(&state.db, name)
        .await?
        .map(Some)
        .ok_or_else(|| ApiError::NetworkNotFound(name.to_owned()))
}

/// The networks of a create request's NICs, in order (`None` = user-mode); one user-mode NIC
/// when the request names none.
pub(crate) async fn nic_networks(
    state: &AppState,
    names: &[String],
) -> Result<Vec<Option<Network>>, ApiError> {
    if names.is_empty() {
        return Ok(vec![None]);
    }
    let mut networks = Vec::with_capacity(names.len());
    for name in names {
        networks.push(named_network(state, name).await?);
    }
    Ok(networks)
}

pub(super) async fn find_vm(state: &AppState, vm_id: VmId) -> Result<Vm, ApiError> {
    db::vms::get_by_id(&state.db, vm_id)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(vm_id.to_string()))
}

pub(super) async fn host_of(state: &AppState, vm: &Vm) -> Result<Host, ApiError> {
    super::host::find_host(state, vm.host_id).await
}

/// The vCPU and memory floor of every VM, for creates and placement ratings alike.
pub fn check_vm_size(cpus: u32, memory_mib: u64) -> Result<(), ApiError> {
    if cpus < 1 || memory_mib < MIN_MEMORY_MIB {
        return Err(ApiError::InvalidVmSpec(format!(
            "a VM needs at least 1 vCPU and {MIN_MEMORY_MIB} MiB of memory; asked for {cpus} vCPUs and {memory_mib} MiB"
        )));
    }
    Ok(())
}

/// The host a request names; a group given with it is refused.
pub(super) async fn named_host(
    state: &AppState,
    name: &str,
    group: Option<&str>,
) -> Result<Host, ApiError> {
    if group.is_some() {
        return Err(ApiError::InvalidVmSpec(
            "give either a host or a group to place the VM in, not both".to_owned(),
        ));
    }
    db::hosts::get(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(name.to_owned()))
}

/// Why a named host (rated 0) cannot take VM `vm`.
pub(super) fn unfit_host(vm: &str, host: Host, reasons: &[String]) -> ApiError {
    match host.state {
        HostState::Maintenance => ApiError::HostInMaintenance(host.name),
        HostState::Responding => ApiError::InsufficientHostResources(format!(
            "VM '{vm}' does not fit on host '{}': {}",
            host.name,
            reasons.join("; ")
        )),
        HostState::NeedsAttention => ApiError::HostNeedsAttention {
            reason: host.state_reason.clone().unwrap_or_default(),
            host: host.name,
        },
        HostState::NotResponding => ApiError::HostNotResponding(host.name),
    }
}

pub(super) const PLACE_STEP: &str = "Rate hosts and place the VM";

/// How many hosts' ratings a create job records.
const RATINGS_IN_JOB: usize = 20;

/// Checks a create request against the names in use, rates the named host or every host of the
/// group, asks the best host's agent whether it could define the VM, and claims the capacity
/// with a row in state Creating. A claim lost to a concurrent create moves on to the next best
/// host; when none is left, nothing has changed.
pub(super) async fn prepare_create(
    state: &AppState,
    vm_id: VmId,
    request: &VmCreate,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    let leftover = db::vms::get_by_id(&state.db, vm_id).await?;
    let restarting_failed_create = leftover
        .as_ref()
        .is_some_and(|vm| vm.state == VmState::Failed);
    if let Some(existing) = db::vms::get(&state.db, &request.name).await?
        && !(restarting_failed_create && existing.id == vm_id)
    {
        return Err(ApiError::VmExists(request.name.clone()));
    }
    check_vm_size(request.cpus, request.memory_mib)?;
    drover_api::devices::validate_devices(&request.devices).map_err(ApiError::InvalidVmSpec)?;
    let networks = nic_networks(state, &request.networks).await?;
    let carried: Vec<Network> = networks.iter().flatten().cloned().collect();
    let needs = Needs {
        demand: Demand {
            cpus: request.cpus,
            memory_mib: request.memory_mib,
            disk_bytes: placement::disk_claim(state, &request.disk)
                .await?
                .saturating_add(request.devices.committed_bytes()),
        },
        networks: &carried,
    };
    let (group, candidates) = match &request.host {
        Some(name) => {
            let host = named_host(state, name, request.group.as_deref()).await?;
            placement::network::check_host(state, &carried, &host).await?;
            let candidate = placement::rate_host(state, host.id, needs).await?;
            if candidate.rating.rating == 0.0 {
                return Err(unfit_host(&request.name, host, &candidate.rating.reasons));
            }
            (host.group_name, vec![candidate])
        }
        None => {
            let rated = placement::rate_group(
                state,
                request.group.as_deref(),
                needs,
                PlacementGoal::LoadBalance,
            )
            .await?;
            (rated.group, rated.candidates)
        }
    };
    if restarting_failed_create {
        db::vms::delete(&state.db, vm_id).await?;
    }
    for candidate in candidates.iter().filter(|c| c.rating.rating > 0.0) {
        let Some(host) = db::hosts::get_by_id(&state.db, candidate.rating.host_id).await? else {
            continue; // removed since it was rated
        };
        let now = Utc::now();
        let vm = Vm {
            id: vm_id,
            name: request.name.clone(),
            host_id: host.id,
            host_name: host.name.clone(),
            state: VmState::Creating,
            state_reason: None,
            cpus: request.cpus,
            memory_mib: request.memory_mib,
            disk: request.disk.clone(),
            kernel: request.kernel.clone(),
            initrd: request.initrd.clone(),
            cmdline: request.cmdline.clone(),
            nics: Vec::new(),
            port_forwards: Vec::new(),
            devices: request.devices.clone(),
            created_at: now,
            updated_at: now,
        };
        state
            .agents
            .at(&host.address)
            .validate(&agent_spec(
                &vm,
                request.seed.clone(),
                request.devices.clone(),
            ))
            .await?;
        let claimed =
            db::placement::claim(&state.db, &vm, needs.demand.disk_bytes, candidate.reserves)
                .await
                .map_err(|error| match error {
                    db::DbError::Duplicate { .. } => ApiError::VmExists(vm.name.clone()),
                    other => other.into(),
                })?;
        if !claimed {
            tracing::debug!(host = %host.name, vm = %vm.name, "lost the claim to another create; trying the next host");
            continue;
        }
        if let Err(error) = db::networks::allocate_nics(&state.db, vm_id, &networks).await {
            db::vms::delete(&state.db, vm_id).await?;
            return Err(error.into());
        }
        db::vms::set_seed(&state.db, vm_id, request.seed.as_ref()).await?;
        db::vms::set_devices(&state.db, vm_id, &request.devices).await?;
        state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
        let mut steps = vec![CREATE_STEP];
        if request.start {
            steps.push(START_STEP);
        }
        return Ok(Plan {
            description: format!("Create VM {} on host {}", request.name, host.name),
            target: target(vm_id, &request.name),
            done: vec![(
                PLACE_STEP,
                placement::describe(&candidates, Some(host.id), RATINGS_IN_JOB),
            )],
            steps,
        });
    }
    let reasons = if candidates.is_empty() {
        "the group has no hosts".to_owned()
    } else {
        placement::describe(&candidates, None, RATINGS_IN_JOB)
    };
    Err(ApiError::NoSuitableHost { group, reasons })
}

pub(super) async fn run_create(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    request: VmCreate,
) -> Result<(), ApiError> {
    let outcome = create_and_start(state, run, vm_id, request.start).await;
    if outcome.is_err() {
        if let Ok(vm) = find_vm(state, vm_id).await
            && let Ok(host) = host_of(state, &vm).await
            && let Err(error) = state.agents.at(&host.address).delete(vm_id).await
        {
            tracing::warn!(error = ?anyhow::Error::from(error), %vm_id, "cannot undo the VM on its host");
        }
        forget(state, vm_id).await;
    }
    outcome
}

async fn create_and_start(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    start: bool,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let agent = state.agents.at(&host.address);
    // A template's base image may be fetched to the host here: its transfer shows as progress.
    run.transfer_step(&host.address, &vm_id.to_string(), async {
        for network in vm_networks(state, &vm).await? {
            super::network::ensure_on_host(state, network, &host).await?;
        }
        let seed = db::vms::seed(&state.db, vm_id).await?;
        let devices = db::vms::devices(&state.db, vm_id).await?;
        let runtime = agent.define(&agent_spec(&vm, seed, devices)).await?;
        record(
            state,
            vm_id,
            Some(VmState::Creating),
            runtime.state,
            runtime.reason.as_deref(),
        )
        .await
    })
    .await?;
    if start {
        run.step(async {
            record(state, vm_id, None, VmState::Starting, None).await?;
            let runtime = agent.action(vm_id, VmAction::Start).await?;
            record(
                state,
                vm_id,
                Some(VmState::Starting),
                runtime.state,
                runtime.reason.as_deref(),
            )
            .await
        })
        .await?;
    }
    Ok(())
}

/// The networks (not user-mode) the VM's NICs are on, each once.
async fn vm_network_rows(state: &AppState, vm: &Vm) -> Result<Vec<Network>, ApiError> {
    let mut networks: Vec<Network> = Vec::new();
    for nic in vm.nics.iter().filter(|nic| nic.network != USER_NETWORK) {
        let network = db::networks::get(&state.db, &nic.network)
            .await?
            .ok_or_else(|| ApiError::NetworkNotFound(nic.network.clone()))?;
        if !networks.iter().any(|known| known.id == network.id) {
            networks.push(network);
        }
    }
    Ok(networks)
}

/// The ids of [`vm_network_rows`].
pub(super) async fn vm_networks(
    state: &AppState,
    vm: &Vm,
) -> Result<Vec<drover_api::NetworkId>, ApiError> {
    Ok(vm_network_rows(state, vm)
        .await?
        .into_iter()
        .map(|network| network.id)
        .collect())
}

/// What an existing VM asks of a host that takes it over (migration, deploy).
pub(super) struct MovedVmNeeds {
    pub demand: Demand,
    pub networks: Vec<Network>,
}

impl MovedVmNeeds {
    pub async fn of(state: &AppState, vm: &Vm) -> Result<MovedVmNeeds, ApiError> {
        let devices = db::vms::devices(&state.db, vm.id).await?;
        Ok(MovedVmNeeds {
            demand: Demand {
                cpus: vm.cpus,
                memory_mib: vm.memory_mib,
                disk_bytes: placement::disk_claim(state, &vm.disk)
                    .await?
                    .saturating_add(devices.committed_bytes()),
            },
            networks: vm_network_rows(state, vm).await?,
        })
    }

    pub fn needs(&self) -> Needs<'_> {
        Needs {
            demand: self.demand,
            networks: &self.networks,
        }
    }
}

/// Records a VM state the job caused and announces it; with `expected`, only while the VM is
/// still in that state (the event stream may already know better).
pub(super) async fn record(
    state: &AppState,
    vm_id: VmId,
    expected: Option<VmState>,
    new_state: VmState,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let changed = match expected {
        Some(expected) => {
            db::vms::set_state_if(&state.db, vm_id, expected, new_state, reason).await?
        }
        None => db::vms::set_state(&state.db, vm_id, new_state, reason).await?,
    };
    if let Some(vm) = changed {
        state.publish(Event::VmChanged(vm));
    }
    Ok(())
}

/// Deletes a VM's row and announces it (the agent's side is the caller's business).
pub(super) async fn forget(state: &AppState, vm_id: VmId) {
    match db::vms::delete(&state.db, vm_id).await {
        Ok(true) => state.publish(Event::VmDeleted(vm_id)),
        Ok(false) => {}
        Err(error) => {
            tracing::error!(error = ?anyhow::Error::from(error), %vm_id, "cannot delete the VM's row")
        }
    }
}

/// Whether `action` makes sense for a VM in `state`. States a queued job will move the VM out
/// of (Creating, Starting, Stopping) accept the action that would follow them.
pub fn action_allowed(action: VmAction, state: VmState) -> bool {
    use VmState::*;
    match action {
        VmAction::Start => matches!(state, Stopped | Failed | Saved | Creating | Stopping),
        VmAction::Stop => matches!(
            state,
            Running | Paused | Starting | Stopping | Failed | Saved
        ),
        VmAction::Shutdown | VmAction::Pause => matches!(state, Running | Starting),
        VmAction::Resume => matches!(state, Paused),
        VmAction::Restart => matches!(state, Running | Paused | Starting),
        VmAction::Save => matches!(state, Running | Paused | Starting),
    }
}

fn action_step(action: VmAction) -> &'static str {
    match action {
        VmAction::Start => START_STEP,
        VmAction::Stop => "Stop virtual machine (power off)",
        VmAction::Shutdown => "Shut down guest (ACPI power button)",
        VmAction::Pause => "Pause virtual machine",
        VmAction::Resume => "Resume virtual machine",
        VmAction::Restart => "Reset virtual machine",
        VmAction::Save => "Save the guest's memory to a file on the host",
    }
}

pub(super) async fn prepare_action(
    state: &AppState,
    vm_id: VmId,
    action: VmAction,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    if vm.state == VmState::Unknown {
        return Err(ApiError::HostNotResponding(vm.host_name));
    }
    if !action_allowed(action, vm.state) {
        return Err(ApiError::vm_state_conflict(&vm, action.as_str()));
    }
    let verb = action.as_str();
    Ok(Plan {
        description: format!("{}{} VM {}", verb[..1].to_uppercase(), &verb[1..], vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![action_step(action)],
    })
}

pub(super) async fn run_action(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    action: VmAction,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let already_there = vm.state == action.target_state() && action != VmAction::Restart;
    let transient = match action {
        VmAction::Start => Some(VmState::Starting),
        VmAction::Stop | VmAction::Shutdown => Some(VmState::Stopping),
        VmAction::Pause | VmAction::Resume | VmAction::Restart | VmAction::Save => None,
    };
    run.step(async {
        if already_there {
            return Ok(());
        }
        if let Some(transient) = transient {
            record(state, vm_id, None, transient, None).await?;
        }
        let expected = transient.unwrap_or(vm.state);
        match state.agents.at(&host.address).action(vm_id, action).await {
            Ok(runtime) => {
                record(
                    state,
                    vm_id,
                    Some(expected),
                    runtime.state,
                    runtime.reason.as_deref(),
                )
                .await
            }
            Err(error) => {
                record(
                    state,
                    vm_id,
                    Some(expected),
                    vm.state,
                    vm.state_reason.as_deref(),
                )
                .await?;
                Err(error.into())
            }
        }
    })
    .await?;
    if already_there {
        run.note(&format!("the VM was already {}", vm.state)).await;
    }
    Ok(())
}

pub(super) async fn prepare_port_forward(
    state: &AppState,
    vm_id: VmId,
    forward: PortForward,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    if !vm.nics.iter().any(|nic| nic.network == USER_NETWORK) {
        return Err(ApiError::NoUserNic(vm.name));
    }
    let forwarded = db::vms::forwarded_ports_on_host(&state.db, vm.host_id).await?;
    if let Some((other, taken)) = forwarded.iter().find(|(name, taken)| {
        taken.same_host_socket(&forward) && !(*name == vm.name && *taken == forward)
    }) {
        return Err(ApiError::PortForwardConflict(format!(
            "{} host port {} on host '{}' already forwards to port {} of VM '{other}'",
            forward.protocol, forward.host_port, vm.host_name, taken.guest_port
        )));
    }
    Ok(Plan {
        description: format!(
            "Forward {} 127.0.0.1:{} to VM {} port {}",
            forward.protocol, forward.host_port, vm.name, forward.guest_port
        ),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec!["Forward the port on the host"],
    })
}

pub(super) async fn run_port_forward(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    forward: PortForward,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    run.step(async {
        state
            .agents
            .at(&host.address)
            .add_port_forward(vm_id, forward)
            .await?;
        let mut forwards = vm.port_forwards.clone();
        if !forwards.contains(&forward) {
            forwards.push(forward);
        }
        if let Some(vm) = db::vms::set_port_forwards(&state.db, vm_id, &forwards).await? {
            state.publish(Event::VmChanged(vm));
        }
        Ok(())
    })
    .await
}

/// The VM's forward of `protocol` host port `host_port`.
fn forward_of(vm: &Vm, protocol: PortProtocol, host_port: u16) -> Result<PortForward, ApiError> {
    vm.port_forwards
        .iter()
        .find(|forward| forward.protocol == protocol && forward.host_port == host_port)
        .copied()
        .ok_or_else(|| ApiError::PortForwardNotFound {
            vm: vm.name.clone(),
            protocol: protocol.to_string(),
            host_port,
        })
}

pub(super) async fn prepare_port_forward_remove(
    state: &AppState,
    vm_id: VmId,
    protocol: PortProtocol,
    host_port: u16,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let forward = forward_of(&vm, protocol, host_port)?;
    Ok(Plan {
        description: format!("Stop forwarding {forward} of VM {}", vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec!["Remove the forward on the host"],
    })
}

pub(super) async fn run_port_forward_remove(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    protocol: PortProtocol,
    host_port: u16,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let forward = forward_of(&vm, protocol, host_port)?;
    let host = host_of(state, &vm).await?;
    run.step(async {
        state
            .agents
            .at(&host.address)
            .remove_port_forward(vm_id, protocol, host_port)
            .await?;
        let forwards: Vec<PortForward> = vm
            .port_forwards
            .iter()
            .filter(|kept| **kept != forward)
            .copied()
            .collect();
        if let Some(vm) = db::vms::set_port_forwards(&state.db, vm_id, &forwards).await? {
            state.publish(Event::VmChanged(vm));
        }
        Ok(())
    })
    .await
}

pub(super) async fn prepare_nic_add(
    state: &AppState,
    vm_id: VmId,
    network: &str,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    refuse_saved(&vm, "add a NIC to")?;
    let found: Vec<Network> = named_network(state, network).await?.into_iter().collect();
    placement::network::check_host(state, &found, &host_of(state, &vm).await?).await?;
    Ok(Plan {
        description: format!("Add a NIC on network {network} to VM {}", vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![
            "Reserve a MAC address and an IP address",
            "Plug the NIC into the VM",
        ],
    })
}

pub(super) async fn run_nic_add(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    network: String,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let slot = run
        .step(async {
            let network = named_network(state, &network).await?;
            if let Some(network) = &network {
                super::network::ensure_on_host(state, network.id, &host).await?;
            }
            Ok(db::networks::add_nic(&state.db, vm_id, network.as_ref()).await?)
        })
        .await?;
    let plugged = run
        .step(async {
            let vm = find_vm(state, vm_id).await?;
            let name = format!("nic{slot}");
            let nic = vm
                .nics
                .iter()
                .find(|nic| nic.name == name)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("NIC {name} vanished")))?;
            state
                .agents
                .at(&host.address)
                .add_nic(vm_id, &agent_nic(vm_id, nic))
                .await?;
            state.publish(Event::VmChanged(vm));
            Ok(())
        })
        .await;
    if plugged.is_err() {
        db::networks::remove_nic(&state.db, vm_id, slot).await?;
    }
    plugged
}

/// A saved VM's memory waits for the devices it was saved with: they cannot change.
fn refuse_saved(vm: &Vm, action: &str) -> Result<(), ApiError> {
    if vm.state == VmState::Saved {
        return Err(ApiError::vm_state_conflict(vm, action));
    }
    Ok(())
}

/// The slot of the VM's NIC `name` (`nic3` is slot 3).
fn nic_slot(vm: &Vm, name: &str) -> Result<i64, ApiError> {
    vm.nics
        .iter()
        .find(|nic| nic.name == name)
        .and_then(|nic| nic.name.strip_prefix("nic")?.parse().ok())
        .ok_or_else(|| ApiError::NicNotFound {
            vm: vm.name.clone(),
            nic: name.to_owned(),
        })
}

pub(super) async fn prepare_nic_remove(
    state: &AppState,
    vm_id: VmId,
    nic: &str,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    refuse_saved(&vm, "remove a NIC from")?;
    nic_slot(&vm, nic)?;
    Ok(Plan {
        description: format!("Remove NIC {nic} from VM {}", vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![
            "Unplug the NIC from the VM",
            "Return its MAC and IP addresses",
        ],
    })
}

pub(super) async fn run_nic_remove(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    nic: String,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let slot = nic_slot(&vm, &nic)?;
    run.step(async {
        Ok(state
            .agents
            .at(&host.address)
            .remove_nic(vm_id, &nic)
            .await?)
    })
    .await?;
    run.step(async {
        db::networks::remove_nic(&state.db, vm_id, slot).await?;
        state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
        Ok(())
    })
    .await
}

pub(super) async fn prepare_delete(state: &AppState, vm_id: VmId) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    Ok(Plan {
        description: format!("Delete VM {}", vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![
            "Remove the VM and its files from the host",
            "Remove the VM from Drover",
        ],
    })
}

pub(super) async fn run_delete(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    run.step(async {
        store::remove_stored_copy(state, &vm).await?;
        Ok(state.agents.at(&host.address).delete(vm_id).await?)
    })
    .await?;
    run.step(async {
        forget(state, vm_id).await;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_needs_a_running_vm() {
        assert!(action_allowed(VmAction::Pause, VmState::Running));
        for state in [
            VmState::Stopped,
            VmState::Paused,
            VmState::Creating,
            VmState::Failed,
        ] {
            assert!(!action_allowed(VmAction::Pause, state), "{state}");
        }
        assert!(
            action_allowed(VmAction::Start, VmState::Creating),
            "start queues behind a create"
        );
        assert!(!action_allowed(VmAction::Resume, VmState::Running));
    }
}
