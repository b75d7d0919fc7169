//! The vms table and its conversion to [`drover_api::Vm`].

use super::{Db, DbError, duplicate_as, from_json, lookup, parse_id, signed, to_json, unsigned};
use chrono::{DateTime, Utc};
use drover_api::{HostId, PortForward, Vm, VmId, VmNic, VmState};

const SELECT: &str = "SELECT vms.*, hosts.name AS host_name, \
    (SELECT json_group_array(json_object('slot', vm_nics.slot, \
        'network', COALESCE(networks.name, 'user'), 'mac', vm_nics.mac, 'ip', vm_nics.ip)) \
     FROM vm_nics LEFT JOIN networks ON networks.id = vm_nics.network_id \
     WHERE vm_nics.vm_id = vms.id) AS nics \
    FROM vms JOIN hosts ON hosts.id = vms.host_id";

/// A NIC as the query above gives it; `slot` orders them (json_group_array keeps no order).
#[derive(serde::Deserialize)]
struct NicRow {
    slot: u32,
    network: String,
    mac: String,
    ip: Option<String>,
}

fn nics(text: &str) -> Result<Vec<VmNic>, DbError> {
    let mut rows: Vec<NicRow> = from_json("vm nics", text)?;
    rows.sort_by_key(|row| row.slot);
    Ok(rows
        .into_iter()
        .map(|row| VmNic {
            name: format!("nic{}", row.slot),
            network: row.network,
            mac: row.mac,
            ip: row.ip,
            lease_ip: None,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct VmRow {
    id: String,
    name: String,
    host_id: String,
    host_name: String,
    state: String,
    state_reason: Option<String>,
    cpus: i64,
    memory_mib: i64,
    disk: String,
    kernel: Option<String>,
    initrd: Option<String>,
    cmdline: Option<String>,
    port_forwards: String,
    nics: String,
    devices: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<VmRow> for Vm {
    type Error = DbError;

    fn try_from(row: VmRow) -> Result<Vm, DbError> {
        Ok(Vm {
            id: parse_id("vm id", &row.id)?,
            host_id: parse_id("host id", &row.host_id)?,
            state: VmState::parse(&row.state).ok_or_else(|| DbError::Corrupt {
                what: "vm state",
                value: row.state.clone(),
            })?,
            disk: from_json("vm disk", &row.disk)?,
            nics: nics(&row.nics)?,
            port_forwards: from_json("vm port forwards", &row.port_forwards)?,
            devices: row
                .devices
                .map(|text| from_json("devices", &text))
                .transpose()?
                .unwrap_or_default(),
            name: row.name,
            host_name: row.host_name,
            state_reason: row.state_reason,
            cpus: unsigned("cpus", row.cpus)?,
            memory_mib: unsigned("memory_mib", row.memory_mib)?,
            kernel: row.kernel,
            initrd: row.initrd,
            cmdline: row.cmdline,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Which VMs a list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmFilter {
    pub host_id: Option<HostId>,
    pub state: Option<VmState>,
}

/// Stores a VM without checking its host's capacity (placement claims with
/// [`super::placement::claim`]); for tools that load many VMs at once, such as the scale bench.
/// [`DbError::Duplicate`] when its name is taken.
pub async fn insert(db: &Db, vm: &Vm) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO vms (id, name, host_id, state, state_reason, cpus, memory_mib, disk, kernel, \
         initrd, cmdline, port_forwards, created_at, updated_at, disk_bytes) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(vm.id.to_string())
    .bind(vm.name.clone())
    .bind(vm.host_id.to_string())
    .bind(vm.state.as_str())
    .bind(vm.state_reason.clone())
    .bind(i64::from(vm.cpus))
    .bind(signed(vm.memory_mib))
    .bind(to_json("vm disk", &vm.disk)?)
    .bind(vm.kernel.clone())
    .bind(vm.initrd.clone())
    .bind(vm.cmdline.clone())
    .bind(to_json("vm port forwards", &vm.port_forwards)?)
    .bind(vm.created_at)
    .bind(vm.updated_at)
    .bind(signed(vm.disk.committed_bytes()))
    .execute(db.pool())
    .await
    .map_err(duplicate_as("vm name"))?;
    Ok(())
}

/// Stores the VM's cloud-init seed (or clears it).
pub async fn set_seed(
    db: &Db,
    id: VmId,
    seed: Option<&drover_api::CloudInitSeed>,
) -> Result<(), DbError> {
    set_json_column(db, id, JsonColumn::Seed, seed).await
}

/// The VM's cloud-init seed, if it has one.
pub async fn seed(db: &Db, id: VmId) -> Result<Option<drover_api::CloudInitSeed>, DbError> {
    json_column(db, id, JsonColumn::Seed).await
}

/// Stores the VM's devices beyond its first disk and NICs (data disks, boot order, machine).
pub async fn set_devices(
    db: &Db,
    id: VmId,
    devices: &drover_api::VmDevices,
) -> Result<(), DbError> {
    let stored = (*devices != drover_api::VmDevices::default()).then_some(devices);
    set_json_column(db, id, JsonColumn::Devices, stored).await
}

/// The VM's devices beyond its first disk and NICs (none for a VM made without them).
pub async fn devices(db: &Db, id: VmId) -> Result<drover_api::VmDevices, DbError> {
    Ok(json_column(db, id, JsonColumn::Devices)
        .await?
        .unwrap_or_default())
}

/// The columns of `vms` that hold a JSON document read and written whole.
#[derive(Debug, Clone, Copy)]
enum JsonColumn {
    Seed,
    Devices,
}

impl JsonColumn {
    fn name(self) -> &'static str {
        match self {
            JsonColumn::Seed => "seed",
            JsonColumn::Devices => "devices",
        }
    }
}

async fn set_json_column<T: serde::Serialize>(
    db: &Db,
    id: VmId,
    column: JsonColumn,
    value: Option<&T>,
) -> Result<(), DbError> {
    let name = column.name();
    let text = value.map(|value| to_json(name, value)).transpose()?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE vms SET {name} = ? WHERE id = ?"
    )))
    .bind(text)
    .bind(id.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

async fn json_column<T: serde::de::DeserializeOwned>(
    db: &Db,
    id: VmId,
    column: JsonColumn,
) -> Result<Option<T>, DbError> {
    let name = column.name();
    let text: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {name} FROM vms WHERE id = ?"
    )))
    .bind(id.to_string())
    .fetch_optional(db.pool())
    .await?;
    text.and_then(|(text,)| text)
        .map(|text| from_json(name, &text))
        .transpose()
}

pub async fn get_by_id(db: &Db, id: VmId) -> Result<Option<Vm>, DbError> {
    get(db, &id.to_string()).await
}

/// Looks a VM up by id or by name.
pub async fn get(db: &Db, id_or_name: &str) -> Result<Option<Vm>, DbError> {
    lookup::<VmRow, Vm>(db, SELECT, ("vms.id", "vms.name"), id_or_name).await
}

/// Up to `limit` VMs in (name, id) order after the key `after`. Each filter has its own index
/// ending in (name, id), so a page costs the same wherever it starts.
pub async fn list(
    db: &Db,
    filter: VmFilter,
    after: Option<(String, String)>,
    limit: u32,
) -> Result<Vec<Vm>, DbError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(SELECT);
    query.push(" WHERE 1 = 1");
    if let Some(host_id) = filter.host_id {
        query
            .push(" AND vms.host_id = ")
            .push_bind(host_id.to_string());
    }
    if let Some(state) = filter.state {
        query.push(" AND vms.state = ").push_bind(state.as_str());
    }
    if let Some((name, id)) = after {
        query
            .push(" AND (vms.name, vms.id) > (")
            .push_bind(name)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY vms.name, vms.id LIMIT ")
        .push_bind(i64::from(limit));
    let rows: Vec<VmRow> = query.build_query_as().fetch_all(db.pool()).await?;
    rows.into_iter().map(Vm::try_from).collect()
}

/// Replaces a VM's port forwards; the changed VM.
pub async fn set_port_forwards(
    db: &Db,
    id: VmId,
    forwards: &[PortForward],
) -> Result<Option<Vm>, DbError> {
    sqlx::query("UPDATE vms SET port_forwards = ?, updated_at = ? WHERE id = ?")
        .bind(to_json("vm port forwards", &forwards)?)
        .bind(Utc::now())
        .bind(id.to_string())
        .execute(db.pool())
        .await?;
    get_by_id(db, id).await
}

/// The host ports forwarded by the VMs of a host, with the VM's name.
pub async fn forwarded_ports_on_host(
    db: &Db,
    host_id: HostId,
) -> Result<Vec<(String, PortForward)>, DbError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, port_forwards FROM vms WHERE host_id = ? ORDER BY name")
            .bind(host_id.to_string())
            .fetch_all(db.pool())
            .await?;
    let mut forwards = Vec::new();
    for (name, text) in rows {
        let vm_forwards: Vec<PortForward> = from_json("vm port forwards", &text)?;
        forwards.extend(
            vm_forwards
                .into_iter()
                .map(|forward| (name.clone(), forward)),
        );
    }
    Ok(forwards)
}

pub async fn names_on_host(db: &Db, host_id: HostId) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM vms WHERE host_id = ? ORDER BY name")
            .bind(host_id.to_string())
            .fetch_all(db.pool())
            .await?,
    )
}

/// The VMs with library item `item` (an ISO) in their CD-ROM drive, by name.
pub async fn names_with_iso(db: &Db, item: &str) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM vms WHERE json_extract(devices, '$.cdrom.iso.item') = ? ORDER BY name",
    )
    .bind(item)
    .fetch_all(db.pool())
    .await?)
}

/// Sets a VM's state when it differs; the changed VM, or `None` when nothing changed.
pub async fn set_state(
    db: &Db,
    id: VmId,
    state: VmState,
    reason: Option<&str>,
) -> Result<Option<Vm>, DbError> {
    update_state(db, id, None, None, state, reason).await
}

/// Sets a VM's state, as its host reports it, when it differs and the VM is still on `host_id`;
/// the changed VM, or `None`.
pub async fn set_state_on(
    db: &Db,
    host_id: HostId,
    id: VmId,
    state: VmState,
    reason: Option<&str>,
) -> Result<Option<Vm>, DbError> {
    update_state(db, id, Some(host_id), None, state, reason).await
}

/// Sets a VM's state only while it is still `expected`: a job's result must not overwrite a
/// newer state that the host's event stream has already recorded.
pub async fn set_state_if(
    db: &Db,
    id: VmId,
    expected: VmState,
    state: VmState,
    reason: Option<&str>,
) -> Result<Option<Vm>, DbError> {
    update_state(db, id, None, Some(expected), state, reason).await
}

async fn update_state(
    db: &Db,
    id: VmId,
    on_host: Option<HostId>,
    expected: Option<VmState>,
    state: VmState,
    reason: Option<&str>,
) -> Result<Option<Vm>, DbError> {
    let changed = sqlx::query(
        "UPDATE vms SET state = ?1, state_reason = ?2, updated_at = ?3 \
         WHERE id = ?4 AND (?5 IS NULL OR state = ?5) AND (?6 IS NULL OR host_id = ?6) \
         AND (state != ?1 OR state_reason IS NOT ?2)",
    )
    .bind(state.as_str())
    .bind(reason.map(str::to_owned))
    .bind(Utc::now())
    .bind(id.to_string())
    .bind(expected.map(VmState::as_str))
    .bind(on_host.map(|host| host.to_string()))
    .execute(db.pool())
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(None);
    }
    get_by_id(db, id).await
}

/// Sets the state of every VM on a host but those in `except`; returns the VMs that changed.
pub async fn set_state_on_host(
    db: &Db,
    host_id: HostId,
    state: VmState,
    reason: Option<&str>,
    except: &[VmState],
) -> Result<Vec<Vm>, DbError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE vms SET state = ");
    query
        .push_bind(state.as_str())
        .push(", state_reason = ")
        .push_bind(reason.map(str::to_owned))
        .push(", updated_at = ")
        .push_bind(Utc::now())
        .push(" WHERE host_id = ")
        .push_bind(host_id.to_string())
        .push(" AND state != ")
        .push_bind(state.as_str());
    for skipped in except {
        query.push(" AND state != ").push_bind(skipped.as_str());
    }
    query.push(" RETURNING id");
    let ids: Vec<String> = query.build_query_scalar().fetch_all(db.pool()).await?;
    let mut changed = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(vm) = get_by_id(db, parse_id("vm id", &id)?).await? {
            changed.push(vm);
        }
    }
    Ok(changed)
}

/// Every VM in `state`, across hosts (for the checks at server start).
pub async fn ids_in_state(db: &Db, state: VmState) -> Result<Vec<VmId>, DbError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM vms WHERE state = ?")
        .bind(state.as_str())
        .fetch_all(db.pool())
        .await?;
    ids.iter().map(|id| parse_id("vm id", id)).collect()
}

/// The ids of the VMs on a host.
pub async fn ids_on_host(db: &Db, host_id: HostId) -> Result<Vec<VmId>, DbError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM vms WHERE host_id = ?")
        .bind(host_id.to_string())
        .fetch_all(db.pool())
        .await?;
    ids.iter().map(|id| parse_id("vm id", id)).collect()
}

pub async fn delete(db: &Db, id: VmId) -> Result<bool, DbError> {
    let deleted = sqlx::query("DELETE FROM vms WHERE id = ?")
        .bind(id.to_string())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(deleted > 0)
}
