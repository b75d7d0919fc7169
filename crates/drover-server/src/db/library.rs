//! Library servers (hosts with the library role), shares and items, and their conversion to
//! the API's [`LibraryServer`], [`LibraryShare`] and [`LibraryItem`].

use super::{Db, DbError, duplicate_as, from_json, lookup, parse_id, signed, to_json, unsigned};
use chrono::{DateTime, Utc};
use drover_api::library::{
    LIBRARY_ROLE, LibraryFile, LibraryItem, LibraryItemKind, LibraryServer, LibraryShare,
};
use drover_api::{HostId, LibraryItemId, LibraryShareId};

#[derive(sqlx::FromRow)]
struct ServerRow {
    id: String,
    name: String,
    address: String,
    transfer_port: Option<i64>,
    share_count: i64,
}

/// The transfer endpoint of a host whose control address is `address`.
pub fn transfer_address(address: &str, transfer_port: u16) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    format!("{host}:{transfer_port}")
}

/// Hosts whose agent reported the library role, by name.
pub async fn servers(db: &Db) -> Result<Vec<LibraryServer>, DbError> {
    let rows: Vec<ServerRow> = sqlx::query_as(
        "SELECT id, name, address, transfer_port, \
         (SELECT COUNT(*) FROM library_shares WHERE host_id = hosts.id) AS share_count \
         FROM hosts WHERE ',' || roles || ',' LIKE ? ORDER BY name",
    )
    .bind(format!("%,{LIBRARY_ROLE},%"))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let port: u16 = unsigned("transfer_port", row.transfer_port.unwrap_or_default())?;
            Ok(LibraryServer {
                host_id: parse_id("host id", &row.id)?,
                name: row.name,
                transfer_address: transfer_address(&row.address, port),
                share_count: unsigned("share_count", row.share_count)?,
            })
        })
        .collect()
}

/// The library server `id_or_name`: `None` when no such host has the library role.
pub async fn server(db: &Db, id_or_name: &str) -> Result<Option<LibraryServer>, DbError> {
    Ok(servers(db)
        .await?
        .into_iter()
        .find(|server| server.name == id_or_name || server.host_id.to_string() == id_or_name))
}

#[derive(sqlx::FromRow)]
struct ShareRow {
    id: String,
    name: String,
    host_id: String,
    server: String,
    path: String,
    item_count: i64,
    created_at: DateTime<Utc>,
}

const SHARE_SELECT: &str = "SELECT library_shares.*, hosts.name AS server, \
    (SELECT COUNT(*) FROM library_items WHERE share_id = library_shares.id) AS item_count \
    FROM library_shares JOIN hosts ON hosts.id = library_shares.host_id";

impl TryFrom<ShareRow> for LibraryShare {
    type Error = DbError;

    fn try_from(row: ShareRow) -> Result<LibraryShare, DbError> {
        Ok(LibraryShare {
            id: parse_id("share id", &row.id)?,
            host_id: parse_id("host id", &row.host_id)?,
            name: row.name,
            server: row.server,
            path: row.path,
            item_count: unsigned("item_count", row.item_count)?,
            created_at: row.created_at,
        })
    }
}

pub async fn shares(db: &Db) -> Result<Vec<LibraryShare>, DbError> {
    let rows: Vec<ShareRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SHARE_SELECT} ORDER BY library_shares.name"
    )))
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(LibraryShare::try_from).collect()
}

pub async fn share(db: &Db, id_or_name: &str) -> Result<Option<LibraryShare>, DbError> {
    lookup::<ShareRow, LibraryShare>(
        db,
        SHARE_SELECT,
        ("library_shares.id", "library_shares.name"),
        id_or_name,
    )
    .await
}

/// Stores a share; [`DbError::Duplicate`] when the name (or the directory on that server) is taken.
pub async fn insert_share(
    db: &Db,
    id: LibraryShareId,
    name: &str,
    host_id: HostId,
    path: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO library_shares (id, name, host_id, path, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(name.to_owned())
    .bind(host_id.to_string())
    .bind(path.to_owned())
    .bind(Utc::now())
    .execute(db.pool())
    .await
    .map_err(duplicate_as("share name or directory"))?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: String,
    name: String,
    share_id: String,
    share: String,
    path: String,
    kind: String,
    format: String,
    virtual_size: i64,
    actual_size: i64,
    backing_chain: String,
    sha256: String,
    created_at: DateTime<Utc>,
}

const ITEM_SELECT: &str = "SELECT library_items.*, library_shares.name AS share \
    FROM library_items JOIN library_shares ON library_shares.id = library_items.share_id";

impl TryFrom<ItemRow> for LibraryItem {
    type Error = DbError;

    fn try_from(row: ItemRow) -> Result<LibraryItem, DbError> {
        Ok(LibraryItem {
            id: parse_id("item id", &row.id)?,
            share_id: parse_id("share id", &row.share_id)?,
            name: row.name,
            share: row.share,
            file: LibraryFile {
                path: row.path,
                kind: LibraryItemKind::parse(&row.kind).ok_or_else(|| DbError::Corrupt {
                    what: "item kind",
                    value: row.kind.clone(),
                })?,
                format: row.format,
                virtual_size: unsigned("virtual_size", row.virtual_size)?,
                actual_size: unsigned("actual_size", row.actual_size)?,
                backing_chain: from_json("backing chain", &row.backing_chain)?,
                sha256: row.sha256,
            },
            created_at: row.created_at,
        })
    }
}

/// Every item, or those of one share, by name.
pub async fn items(db: &Db, share_id: Option<LibraryShareId>) -> Result<Vec<LibraryItem>, DbError> {
    let rows: Vec<ItemRow> = match share_id {
        Some(share_id) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ITEM_SELECT} WHERE library_items.share_id = ? ORDER BY library_items.name"
        )))
        .bind(share_id.to_string()),
        None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ITEM_SELECT} ORDER BY library_items.name"
        ))),
    }
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(LibraryItem::try_from).collect()
}

pub async fn item(db: &Db, id_or_name: &str) -> Result<Option<LibraryItem>, DbError> {
    lookup::<ItemRow, LibraryItem>(
        db,
        ITEM_SELECT,
        ("library_items.id", "library_items.name"),
        id_or_name,
    )
    .await
}

/// Stores an item; [`DbError::Duplicate`] when its name (or its file in the share) is taken.
pub async fn insert_item(
    db: &Db,
    id: LibraryItemId,
    name: &str,
    share_id: LibraryShareId,
    file: &LibraryFile,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO library_items (id, name, share_id, path, kind, format, virtual_size, \
         actual_size, backing_chain, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(name.to_owned())
    .bind(share_id.to_string())
    .bind(file.path.clone())
    .bind(file.kind.as_str())
    .bind(file.format.clone())
    .bind(signed(file.virtual_size))
    .bind(signed(file.actual_size))
    .bind(to_json("backing chain", &file.backing_chain)?)
    .bind(file.sha256.clone())
    .bind(Utc::now())
    .execute(db.pool())
    .await
    .map_err(duplicate_as("item name or file"))?;
    Ok(())
}

/// Brings an item's index up to date with its file (changed by hand since the last refresh).
pub async fn update_item_file(
    db: &Db,
    id: LibraryItemId,
    file: &LibraryFile,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE library_items SET kind = ?, format = ?, virtual_size = ?, actual_size = ?, \
         backing_chain = ?, sha256 = ? WHERE id = ?",
    )
    .bind(file.kind.as_str())
    .bind(file.format.clone())
    .bind(signed(file.virtual_size))
    .bind(signed(file.actual_size))
    .bind(to_json("backing chain", &file.backing_chain)?)
    .bind(file.sha256.clone())
    .bind(id.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn delete_item(db: &Db, id: LibraryItemId) -> Result<bool, DbError> {
    let deleted = sqlx::query("DELETE FROM library_items WHERE id = ?")
        .bind(id.to_string())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_addresses() {
        assert_eq!(transfer_address("127.0.0.1:8101", 8102), "127.0.0.1:8102");
        assert_eq!(transfer_address("[::1]:8101", 9000), "[::1]:9000");
        assert_eq!(
            transfer_address("kvm1.example.com:8101", 8102),
            "kvm1.example.com:8102"
        );
    }
}
