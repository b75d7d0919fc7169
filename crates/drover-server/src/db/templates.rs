//! Hardware and guest OS profiles and templates, and their conversion to the API's types.

use super::{Db, DbError, duplicate_as, from_json, parse_id, to_json};
use chrono::{DateTime, Utc};
use drover_api::template::{GuestOsProfile, GuestOsSpec, HardwareProfile, HardwareSpec, Template};
use drover_api::{HostId, LibraryItemId, ProfileId, TemplateId};

pub const HARDWARE: &str = "hardware";
pub const GUEST_OS: &str = "guest_os";

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: String,
    name: String,
    spec: String,
    created_at: DateTime<Utc>,
}

async fn profile_rows(
    db: &Db,
    kind: &str,
    id_or_name: Option<&str>,
) -> Result<Vec<ProfileRow>, DbError> {
    let rows = match id_or_name {
        Some(key) => {
            sqlx::query_as(
                "SELECT id, name, spec, created_at FROM profiles \
                 WHERE kind = ? AND (id = ? OR name = ?)",
            )
            .bind(kind.to_owned())
            .bind(key.to_owned())
            .bind(key.to_owned())
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT id, name, spec, created_at FROM profiles WHERE kind = ? ORDER BY name",
            )
            .bind(kind.to_owned())
            .fetch_all(db.pool())
            .await?
        }
    };
    Ok(rows)
}

fn hardware(row: ProfileRow) -> Result<HardwareProfile, DbError> {
    Ok(HardwareProfile {
        id: parse_id("profile id", &row.id)?,
        spec: from_json::<HardwareSpec>("hardware profile", &row.spec)?,
        name: row.name,
        created_at: row.created_at,
    })
}

fn guest_os(row: ProfileRow) -> Result<GuestOsProfile, DbError> {
    Ok(GuestOsProfile {
        id: parse_id("profile id", &row.id)?,
        spec: from_json::<GuestOsSpec>("guest OS profile", &row.spec)?,
        name: row.name,
        created_at: row.created_at,
    })
}

pub async fn hardware_profiles(db: &Db) -> Result<Vec<HardwareProfile>, DbError> {
    profile_rows(db, HARDWARE, None)
        .await?
        .into_iter()
        .map(hardware)
        .collect()
}

pub async fn hardware_profile(
    db: &Db,
    id_or_name: &str,
) -> Result<Option<HardwareProfile>, DbError> {
    profile_rows(db, HARDWARE, Some(id_or_name))
        .await?
        .into_iter()
        .next()
        .map(hardware)
        .transpose()
}

pub async fn guest_os_profiles(db: &Db) -> Result<Vec<GuestOsProfile>, DbError> {
    profile_rows(db, GUEST_OS, None)
        .await?
        .into_iter()
        .map(guest_os)
        .collect()
}

pub async fn guest_os_profile(
    db: &Db,
    id_or_name: &str,
) -> Result<Option<GuestOsProfile>, DbError> {
    profile_rows(db, GUEST_OS, Some(id_or_name))
        .await?
        .into_iter()
        .next()
        .map(guest_os)
        .transpose()
}

/// Stores a profile of `kind` ([`HARDWARE`] or [`GUEST_OS`]); [`DbError::Duplicate`] when the
/// name is taken for that kind.
pub async fn insert_profile(
    db: &Db,
    id: ProfileId,
    kind: &str,
    name: &str,
    spec: &impl serde::Serialize,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO profiles (id, kind, name, spec, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(id.to_string())
        .bind(kind.to_owned())
        .bind(name.to_owned())
        .bind(to_json("profile", spec)?)
        .bind(Utc::now())
        .execute(db.pool())
        .await
        .map_err(duplicate_as("profile name"))?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TemplateRow {
    id: String,
    name: String,
    item_id: String,
    disk: String,
    hardware: String,
    guest_os: Option<String>,
    created_at: DateTime<Utc>,
}

const TEMPLATE_SELECT: &str = "SELECT templates.id, templates.name, templates.item_id, \
    library_items.name AS disk, hardware.name AS hardware, guest.name AS guest_os, \
    templates.created_at FROM templates \
    JOIN library_items ON library_items.id = templates.item_id \
    JOIN profiles AS hardware ON hardware.id = templates.hardware_id \
    LEFT JOIN profiles AS guest ON guest.id = templates.guest_os_id";

impl TryFrom<TemplateRow> for Template {
    type Error = DbError;

    fn try_from(row: TemplateRow) -> Result<Template, DbError> {
        Ok(Template {
            id: parse_id("template id", &row.id)?,
            disk_id: parse_id("item id", &row.item_id)?,
            name: row.name,
            disk: row.disk,
            hardware: row.hardware,
            guest_os: row.guest_os,
            created_at: row.created_at,
        })
    }
}

pub async fn templates(db: &Db) -> Result<Vec<Template>, DbError> {
    let rows: Vec<TemplateRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TEMPLATE_SELECT} ORDER BY templates.name"
    )))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(Template::try_from).collect()
}

pub async fn template(db: &Db, id_or_name: &str) -> Result<Option<Template>, DbError> {
    let row: Option<TemplateRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TEMPLATE_SELECT} WHERE templates.id = ? OR templates.name = ?"
    )))
    .bind(id_or_name.to_owned())
    .bind(id_or_name.to_owned())
    .fetch_optional(db.pool())
    .await?;
    row.map(Template::try_from).transpose()
}

/// The names of the templates that use a library item: what keeps it from being removed.
pub async fn names_using_item(db: &Db, item_id: LibraryItemId) -> Result<Vec<String>, DbError> {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM templates WHERE item_id = ? ORDER BY name")
            .bind(item_id.to_string())
            .fetch_all(db.pool())
            .await?;
    Ok(names.into_iter().map(|(name,)| name).collect())
}

/// The names of the templates whose disk is in a share of library server `host_id`.
pub async fn names_using_server(db: &Db, host_id: HostId) -> Result<Vec<String>, DbError> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT templates.name FROM templates \
         JOIN library_items ON library_items.id = templates.item_id \
         JOIN library_shares ON library_shares.id = library_items.share_id \
         WHERE library_shares.host_id = ? ORDER BY templates.name",
    )
    .bind(host_id.to_string())
    .fetch_all(db.pool())
    .await?;
    Ok(names.into_iter().map(|(name,)| name).collect())
}

/// The names of the templates that use a profile (of either kind).
pub async fn names_using_profile(db: &Db, profile_id: ProfileId) -> Result<Vec<String>, DbError> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM templates WHERE hardware_id = ?1 OR guest_os_id = ?1 ORDER BY name",
    )
    .bind(profile_id.to_string())
    .fetch_all(db.pool())
    .await?;
    Ok(names.into_iter().map(|(name,)| name).collect())
}

/// Deletes a profile that no template uses; `false` when it was gone already. A template that
/// came to use it meanwhile keeps it: the statement checks and deletes at once.
pub async fn delete_profile(db: &Db, id: ProfileId) -> Result<bool, DbError> {
    let deleted = sqlx::query(
        "DELETE FROM profiles WHERE id = ?1 AND NOT EXISTS \
         (SELECT 1 FROM templates WHERE hardware_id = ?1 OR guest_os_id = ?1)",
    )
    .bind(id.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(deleted > 0)
}

pub async fn delete_template(db: &Db, id: TemplateId) -> Result<bool, DbError> {
    let deleted = sqlx::query("DELETE FROM templates WHERE id = ?")
        .bind(id.to_string())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

pub async fn insert_template(
    db: &Db,
    id: TemplateId,
    name: &str,
    item_id: LibraryItemId,
    hardware_id: ProfileId,
    guest_os_id: Option<ProfileId>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO templates (id, name, item_id, hardware_id, guest_os_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(name.to_owned())
    .bind(item_id.to_string())
    .bind(hardware_id.to_string())
    .bind(guest_os_id.map(|id| id.to_string()))
    .bind(Utc::now())
    .execute(db.pool())
    .await
    .map_err(duplicate_as("template name"))?;
    Ok(())
}
