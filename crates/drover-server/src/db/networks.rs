//! The networks and vm_nics tables: networks and their conversion to [`drover_api::Network`],
//! and the MAC and IP pools, whose allocations are NIC rows (the unique indexes arbitrate).

use super::{Db, DbError, duplicate_as, from_json, parse_id, unsigned};
use crate::ipam;
use chrono::{DateTime, Utc};
use drover_api::network::NetworkHostState;
use drover_api::network::pool_mac;
use drover_api::{HostGroupId, HostId, Network, NetworkId, NetworkMode, VmId};
use std::collections::HashSet;
use std::net::Ipv4Addr;

const SELECT: &str = "SELECT networks.*, \
    (SELECT name FROM host_groups WHERE host_groups.id = networks.group_id) AS group_name, \
    (SELECT json_group_array(name) FROM (SELECT DISTINCT vms.name AS name FROM vm_nics \
     JOIN vms ON vms.id = vm_nics.vm_id WHERE vm_nics.network_id = networks.id ORDER BY vms.name)) \
     AS vm_names, \
    (SELECT json_group_array(json_object('host_name', name, 'state', state, 'reason', reason)) \
     FROM (SELECT hosts.name AS name, network_hosts.state AS state, network_hosts.reason AS reason \
     FROM network_hosts JOIN hosts ON hosts.id = network_hosts.host_id \
     WHERE network_hosts.network_id = networks.id ORDER BY hosts.name)) AS host_states \
    FROM networks";

/// How many times an allocation retries after another one took its pick meanwhile.
const ALLOCATION_ATTEMPTS: usize = 64;

#[derive(sqlx::FromRow)]
struct NetworkRow {
    id: String,
    name: String,
    mode: String,
    subnet: Option<String>,
    gateway: Option<String>,
    dhcp_start: Option<String>,
    dhcp_end: Option<String>,
    vlan: Option<i64>,
    uplink: Option<String>,
    overlay: bool,
    bridge: String,
    vni: Option<i64>,
    group_name: Option<String>,
    created_at: DateTime<Utc>,
    vm_names: String,
    host_states: String,
}

impl TryFrom<NetworkRow> for Network {
    type Error = DbError;

    fn try_from(row: NetworkRow) -> Result<Network, DbError> {
        Ok(Network {
            id: parse_id("network id", &row.id)?,
            mode: NetworkMode::parse(&row.mode).ok_or_else(|| DbError::Corrupt {
                what: "network mode",
                value: row.mode.clone(),
            })?,
            vlan: row.vlan.map(|vlan| unsigned("vlan", vlan)).transpose()?,
            vms: from_json("network vms", &row.vm_names)?,
            hosts: from_json("network hosts", &row.host_states)?,
            vni: row.vni.map(|vni| unsigned("vni", vni)).transpose()?,
            name: row.name,
            subnet: row.subnet,
            gateway: row.gateway,
            dhcp_start: row.dhcp_start,
            dhcp_end: row.dhcp_end,
            uplink: row.uplink,
            overlay: row.overlay,
            bridge: row.bridge,
            group: row.group_name,
            created_at: row.created_at,
        })
    }
}

/// The first VXLAN network identifier given to an overlay.
const FIRST_VNI: i64 = 10_000;

/// Stores a new network (an overlay gets the next free VNI), scoped to the subtree of `group`
/// when given; [`DbError::Duplicate`] when its name is taken.
pub async fn insert(db: &Db, network: &Network, group: Option<HostGroupId>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO networks (id, name, mode, subnet, gateway, dhcp_start, dhcp_end, vlan, \
         uplink, overlay, bridge, vni, created_at, group_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
         CASE WHEN ?10 THEN (SELECT COALESCE(MAX(vni) + 1, ?12) FROM networks) END, ?13, ?14)",
    )
    .bind(network.id.to_string())
    .bind(network.name.clone())
    .bind(network.mode.as_str())
    .bind(network.subnet.clone())
    .bind(network.gateway.clone())
    .bind(network.dhcp_start.clone())
    .bind(network.dhcp_end.clone())
    .bind(network.vlan.map(i64::from))
    .bind(network.uplink.clone())
    .bind(network.overlay)
    .bind(network.bridge.clone())
    .bind(FIRST_VNI)
    .bind(network.created_at)
    .bind(group.map(|group| group.to_string()))
    .execute(db.pool())
    .await
    .map_err(duplicate_as("network name"))?;
    Ok(())
}

/// Looks a network up by id or by name.
pub async fn get(db: &Db, id_or_name: &str) -> Result<Option<Network>, DbError> {
    let column = if id_or_name.parse::<NetworkId>().is_ok() {
        "id"
    } else {
        "name"
    };
    let row: Option<NetworkRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE networks.{column} = ?"
    )))
    .bind(id_or_name.to_owned())
    .fetch_optional(db.pool())
    .await?;
    row.map(Network::try_from).transpose()
}

/// Up to `limit` networks in name order after `after`.
pub async fn list(db: &Db, after: Option<String>, limit: u32) -> Result<Vec<Network>, DbError> {
    let rows: Vec<NetworkRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE (?1 IS NULL OR networks.name > ?1) ORDER BY networks.name LIMIT ?2"
    )))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(Network::try_from).collect()
}

/// Every network's name and subnet, for the overlap check.
pub async fn subnets(db: &Db) -> Result<Vec<(String, String)>, DbError> {
    Ok(
        sqlx::query_as("SELECT name, subnet FROM networks WHERE subnet IS NOT NULL ORDER BY name")
            .fetch_all(db.pool())
            .await?,
    )
}

/// Deletes a network no NIC uses; `false` when NICs use it (or it is gone).
pub async fn delete_unused(db: &Db, id: NetworkId) -> Result<bool, DbError> {
    let deleted = sqlx::query(
        "DELETE FROM networks WHERE id = ?1 \
         AND NOT EXISTS (SELECT 1 FROM vm_nics WHERE network_id = ?1)",
    )
    .bind(id.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

/// Names of the networks scoped to host group `group`.
pub async fn names_in_group(db: &Db, group: HostGroupId) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM networks WHERE group_id = ? ORDER BY name")
            .bind(group.to_string())
            .fetch_all(db.pool())
            .await?,
    )
}

/// Records how a network stands on a host.
pub async fn set_host_state(
    db: &Db,
    network_id: NetworkId,
    host_id: HostId,
    state: NetworkHostState,
    reason: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO network_hosts (network_id, host_id, state, reason) VALUES (?, ?, ?, ?) \
         ON CONFLICT (network_id, host_id) DO UPDATE SET state = excluded.state, reason = excluded.reason",
    )
    .bind(network_id.to_string())
    .bind(host_id.to_string())
    .bind(state.as_str())
    .bind(reason.map(str::to_owned))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The networks realized on host `host_id`, by name.
pub async fn carried_by(db: &Db, host_id: HostId) -> Result<Vec<Network>, DbError> {
    let rows: Vec<NetworkRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE networks.id IN (SELECT network_id FROM network_hosts WHERE host_id = ?) \
         ORDER BY networks.name"
    )))
    .bind(host_id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(Network::try_from).collect()
}

/// Names of the VMs on host `host_id` with a NIC on network `network_id`.
pub async fn vms_on_host(
    db: &Db,
    network_id: NetworkId,
    host_id: HostId,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT vms.name FROM vm_nics JOIN vms ON vms.id = vm_nics.vm_id \
         WHERE vm_nics.network_id = ? AND vms.host_id = ? ORDER BY vms.name",
    )
    .bind(network_id.to_string())
    .bind(host_id.to_string())
    .fetch_all(db.pool())
    .await?)
}

/// Forgets that host `host_id` carries network `network_id` (the host gave it up).
pub async fn forget_host(db: &Db, network_id: NetworkId, host_id: HostId) -> Result<(), DbError> {
    sqlx::query("DELETE FROM network_hosts WHERE network_id = ? AND host_id = ?")
        .bind(network_id.to_string())
        .bind(host_id.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Why a NIC could not get its addresses.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    #[error("network '{0}' has no free address left in its DHCP range")]
    IpPoolExhausted(String),
    #[error("no free MAC address found in the pool")]
    MacPoolExhausted,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Gives `vm_id` one NIC per entry of `networks` (`None` = user-mode), in slot order from 0.
/// On error, NICs already made stay: the caller deletes the VM, which removes them.
pub async fn allocate_nics(
    db: &Db,
    vm_id: VmId,
    networks: &[Option<Network>],
) -> Result<(), AllocationError> {
    for (slot, network) in networks.iter().enumerate() {
        allocate_nic(
            db,
            vm_id,
            i64::try_from(slot).unwrap_or(i64::MAX),
            network.as_ref(),
        )
        .await?;
    }
    Ok(())
}

/// Adds one NIC to `vm_id` in the slot after its last; the slot.
pub async fn add_nic(
    db: &Db,
    vm_id: VmId,
    network: Option<&Network>,
) -> Result<i64, AllocationError> {
    let slot: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(slot) + 1, 0) FROM vm_nics WHERE vm_id = ?")
            .bind(vm_id.to_string())
            .fetch_one(db.pool())
            .await
            .map_err(DbError::Query)?;
    allocate_nic(db, vm_id, slot, network).await?;
    Ok(slot)
}

/// Removes a VM's NIC, returning its MAC and IP to the pools.
pub async fn remove_nic(db: &Db, vm_id: VmId, slot: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM vm_nics WHERE vm_id = ? AND slot = ?")
        .bind(vm_id.to_string())
        .bind(slot)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Makes NIC `slot` of `vm_id`: a MAC from the global pool and, on a network with a DHCP range,
/// the lowest free address of it. Picks are inserted at once; a unique index refusing one
/// (another allocation took it meanwhile) means pick again.
async fn allocate_nic(
    db: &Db,
    vm_id: VmId,
    slot: i64,
    network: Option<&Network>,
) -> Result<(), AllocationError> {
    for _ in 0..ALLOCATION_ATTEMPTS {
        let ip = match network {
            Some(network) => free_ip(db, network).await?,
            None => None,
        };
        let mac = pool_mac(rand::random());
        let result = sqlx::query(
            "INSERT INTO vm_nics (vm_id, slot, network_id, mac, ip) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(vm_id.to_string())
        .bind(slot)
        .bind(network.map(|network| network.id.to_string()))
        .bind(mac)
        .bind(ip.map(|ip| ip.to_string()))
        .execute(db.pool())
        .await;
        match result {
            Ok(_) => return Ok(()),
            Err(error)
                if error
                    .as_database_error()
                    .is_some_and(|error| error.is_unique_violation()) => {}
            Err(error) => return Err(DbError::Query(error).into()),
        }
    }
    Err(AllocationError::MacPoolExhausted)
}

/// The lowest free address of the network's DHCP range; `None` for a network without one.
async fn free_ip(db: &Db, network: &Network) -> Result<Option<Ipv4Addr>, AllocationError> {
    let (Some(start), Some(end)) = (&network.dhcp_start, &network.dhcp_end) else {
        return Ok(None);
    };
    let parse = |text: &str| {
        text.parse::<Ipv4Addr>().map_err(|_| DbError::Corrupt {
            what: "dhcp range",
            value: text.to_owned(),
        })
    };
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT ip FROM vm_nics WHERE network_id = ? AND ip IS NOT NULL")
            .bind(network.id.to_string())
            .fetch_all(db.pool())
            .await
            .map_err(DbError::Query)?;
    let taken: HashSet<Ipv4Addr> = taken.iter().filter_map(|ip| ip.parse().ok()).collect();
    match ipam::first_free(parse(start)?, parse(end)?, &taken) {
        Some(ip) => Ok(Some(ip)),
        None => Err(AllocationError::IpPoolExhausted(network.name.clone())),
    }
}
