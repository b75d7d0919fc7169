//! Host jobs: add (enroll the agent, then reach it with mutual TLS), remove, move to another
//! group, and maintenance mode on or off.

use super::{JobRun, Plan};
use crate::agents::{AgentError, address_host, enroll};
use crate::db;
use crate::http::ApiError;
use crate::state::AppState;
use chrono::Utc;
use drover_api::{Event, Host, HostAdd, HostGroupId, HostId, HostState, JobTarget};
use std::time::{Duration, Instant};

/// How long an agent may take to switch to its new certificate after enrollment.
const CERTIFICATE_SWITCH: Duration = Duration::from_secs(10);

fn target(host_id: HostId, name: &str) -> JobTarget {
    JobTarget {
        kind: "host".to_owned(),
        id: host_id.to_string(),
        name: name.to_owned(),
    }
}

pub(super) async fn prepare_add(
    state: &AppState,
    host_id: HostId,
    request: &HostAdd,
) -> Result<Plan, ApiError> {
    address_host(&request.address).map_err(|reason| ApiError::InvalidAddress {
        address: request.address.clone(),
        reason,
    })?;
    if let Some(name) = &request.name {
        drover_api::vm::validate_name(name).map_err(ApiError::InvalidName)?;
        if db::hosts::get(&state.db, name).await?.is_some() {
            return Err(ApiError::HostExists(name.clone()));
        }
    }
    if db::hosts::address_taken(&state.db, &request.address).await? {
        return Err(ApiError::HostExists(request.address.clone()));
    }
    if let Some(group) = &request.group {
        find_group(state, group).await?;
    }
    let shown_name = request
        .name
        .clone()
        .unwrap_or_else(|| request.address.clone());
    Ok(Plan {
        description: format!("Add host {shown_name}"),
        target: target(host_id, &shown_name),
        done: Vec::new(),
        steps: vec![
            "Enroll the agent with its one-time code",
            "Connect with mutual TLS and read the host's inventory",
        ],
    })
}

pub(super) async fn run_add(
    state: &AppState,
    run: &mut JobRun,
    host_id: HostId,
    request: HostAdd,
) -> Result<(), ApiError> {
    let address = request.address.as_str();
    run.step(async {
        match enroll(address, &request.enrollment_code, &state.pki.ca).await {
            Ok(_hostname) => Ok(()),
            Err(AgentError::Refused {
                status: 401 | 403, ..
            }) => Err(ApiError::EnrollmentCodeInvalid),
            Err(error) => Err(error.into()),
        }
    })
    .await?;
    run.step(async {
        let (group_id, group_name) = match &request.group {
            Some(group) => find_group(state, group).await?,
            None => (
                db::hostgroups::root_id(),
                drover_api::hostgroup::ROOT_GROUP_NAME.to_owned(),
            ),
        };
        let info = host_info_after_enrollment(state, address).await?;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| info.hostname.clone());
        drover_api::vm::validate_name(&name).map_err(ApiError::InvalidName)?;
        let host = Host {
            id: host_id,
            name: name.clone(),
            address: address.to_owned(),
            state: HostState::Responding,
            state_reason: None,
            cpus: info.cpus,
            memory_mib: info.memory_mib,
            memory_free_mib: info.memory_free_mib,
            disk_free_bytes: info.disk_free_bytes,
            cpu_load_percent: info.cpu_load_percent,
            accelerator: info.accelerator,
            agent_version: info.agent_version.clone(),
            vm_count: 0,
            group_id,
            group_name,
            last_seen: Some(Utc::now()),
            created_at: Utc::now(),
        };
        let inserted = db::hosts::insert(&state.db, &host)
            .await
            .map_err(|error| match error {
                db::DbError::Duplicate { .. } => ApiError::HostExists(name),
                other => other.into(),
            })?;
        if !inserted {
            return Err(ApiError::HostGroupNotFound(host.group_name.clone()));
        }
        // Roles and the transfer port are not in `Host`; the agent's report records them.
        let assessment = crate::agents::health::assess(&info);
        let host = db::hosts::apply_info(&state.db, host_id, &info, assessment)
            .await?
            .unwrap_or(host);
        state.publish(Event::HostChanged(host));
        state.supervisors.start(state, host_id, address.to_owned());
        Ok(())
    })
    .await
}

/// The agent installs its certificate after answering the enrollment; retry until it shows it.
async fn host_info_after_enrollment(
    state: &AppState,
    address: &str,
) -> Result<drover_api::agent::AgentHostInfo, ApiError> {
    let deadline = Instant::now() + CERTIFICATE_SWITCH;
    loop {
        match state.agents.at(address).host_info().await {
            Ok(info) => return Ok(info),
            Err(error) if Instant::now() >= deadline => return Err(error.into()),
            Err(AgentError::Refused { status, detail, .. }) if status != 401 && status != 403 => {
                return Err(ApiError::Agent { status, detail });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub(super) async fn prepare_remove(state: &AppState, host_id: HostId) -> Result<Plan, ApiError> {
    let host = db::hosts::get_by_id(&state.db, host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))?;
    refuse_if_vms(state, &host).await?;
    Ok(Plan {
        description: format!("Remove host {}", host.name),
        target: target(host_id, &host.name),
        done: Vec::new(),
        steps: vec!["Stop supervising the host and remove it"],
    })
}

async fn refuse_if_vms(state: &AppState, host: &Host) -> Result<(), ApiError> {
    let names = db::vms::names_on_host(&state.db, host.id).await?;
    if !names.is_empty() {
        return Err(ApiError::HostHasVms {
            host: host.name.clone(),
            vms: names.join(", "),
        });
    }
    // Removing a library server forgets its shares and items, but not those templates use.
    let templates = db::templates::names_using_server(&state.db, host.id).await?;
    if !templates.is_empty() {
        return Err(ApiError::LibraryItemInUse {
            item: format!("the library on host '{}'", host.name),
            templates: templates.join(", "),
        });
    }
    Ok(())
}

pub(super) async fn run_remove(
    state: &AppState,
    run: &mut JobRun,
    host_id: HostId,
) -> Result<(), ApiError> {
    run.step(async {
        let host = db::hosts::get_by_id(&state.db, host_id)
            .await?
            .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))?;
        refuse_if_vms(state, &host).await?;
        state.supervisors.stop(host_id);
        db::hosts::delete(&state.db, host_id).await?;
        state.publish(Event::HostRemoved(host_id));
        Ok(())
    })
    .await
}

/// A group's id and name by id or name.
async fn find_group(state: &AppState, id_or_name: &str) -> Result<(HostGroupId, String), ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = tree
        .find(id_or_name)
        .ok_or_else(|| ApiError::HostGroupNotFound(id_or_name.to_owned()))?;
    Ok((group.id, group.name.clone()))
}

/// The host of that id, or `host_not_found`.
pub(super) async fn find_host(state: &AppState, host_id: HostId) -> Result<Host, ApiError> {
    db::hosts::get_by_id(&state.db, host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))
}

pub(super) async fn prepare_move(
    state: &AppState,
    host_id: HostId,
    group_id: HostGroupId,
) -> Result<Plan, ApiError> {
    let host = find_host(state, host_id).await?;
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = tree
        .get(group_id)
        .ok_or_else(|| ApiError::HostGroupNotFound(group_id.to_string()))?;
    let left = super::network::out_of_scope(state, &host, group_id).await?;
    super::network::refuse_left_in_use(&host, &left)?;
    Ok(Plan {
        description: format!("Move host {} to group {}", host.name, group.name),
        target: target(host_id, &host.name),
        done: Vec::new(),
        steps: vec![
            "Move the host to its new group",
            "Remove the networks scoped to other groups from the host",
        ],
    })
}

pub(super) async fn run_move(
    state: &AppState,
    run: &mut JobRun,
    host_id: HostId,
    group_id: HostGroupId,
) -> Result<(), ApiError> {
    let left = run
        .step(async {
            let host = find_host(state, host_id).await?;
            // Checked again: a VM may have taken a NIC on one of them while the job waited.
            let left = super::network::out_of_scope(state, &host, group_id).await?;
            super::network::refuse_left_in_use(&host, &left)?;
            if !db::hostgroups::move_host(&state.db, host_id, group_id).await? {
                // Either the host or the group went away while the job waited.
                find_host(state, host_id).await?;
                return Err(ApiError::HostGroupNotFound(group_id.to_string()));
            }
            state.publish(Event::HostChanged(find_host(state, host_id).await?));
            Ok(left)
        })
        .await?;
    run.step(async {
        let host = find_host(state, host_id).await?;
        super::network::give_up(state, &host, left).await
    })
    .await
}

pub(super) async fn prepare_maintenance(
    state: &AppState,
    host_id: HostId,
    enabled: bool,
) -> Result<Plan, ApiError> {
    let host = find_host(state, host_id).await?;
    let (description, steps) = if enabled {
        (
            format!("Put host {} in maintenance mode", host.name),
            vec![
                "Stop placing new VMs on the host",
                "Live-migrate its running VMs to other hosts",
            ],
        )
    } else {
        (
            format!("Return host {} to service", host.name),
            vec!["Place new VMs on the host again"],
        )
    };
    Ok(Plan {
        description,
        target: target(host_id, &host.name),
        done: Vec::new(),
        steps,
    })
}

/// Maintenance mode stops new placements, then live-migrates the host's running VMs away
/// (stopped and paused VMs stay).
pub(super) async fn run_maintenance(
    state: &AppState,
    run: &mut JobRun,
    host_id: HostId,
    enabled: bool,
) -> Result<(), ApiError> {
    let host = run
        .step(async {
            let host = db::hosts::set_maintenance(&state.db, host_id, enabled)
                .await?
                .ok_or_else(|| ApiError::HostNotFound(host_id.to_string()))?;
            state.publish(Event::HostChanged(host.clone()));
            Ok(host)
        })
        .await?;
    if enabled {
        super::migration::evacuate(state, run, &host).await?;
    }
    Ok(())
}
