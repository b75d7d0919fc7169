//! The database: SQLite in the data directory through sqlx, with the migrations in
//! `crates/drover-server/migrations`. One submodule per table family; rows become API types here,
//! in one place per type. Nothing outside this module writes SQL; nothing in it knows HTTP.

pub mod checkpoints;
pub mod hostgroups;
pub mod hosts;
pub mod jobs;
pub mod library;
pub mod migration;
pub mod networks;
pub mod placement;
pub mod stored;
pub mod templates;
pub mod users;
pub mod vms;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error("cannot apply the database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique column (a name, an address) already holds the value.
    #[error("a row with this {what} already exists")]
    Duplicate { what: &'static str },
    #[error("stored {what} '{value}' is not valid")]
    Corrupt { what: &'static str, value: String },
    #[error("cannot encode or decode the stored {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// How long a statement waits for another writer before SQLite gives up. Writes are single short
/// statements, so reaching this means something is badly wrong, not that the server is busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
}

impl Db {
    /// Opens (creating when missing) the SQLite database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        set_private(path);
        Ok(Db { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for every connection to close, so that the files are complete for the next start.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database holds password hashes and job parameters: readable by its owner only. SQLite
/// creates the WAL files beside it with the same mode as the main file.
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), %error, "cannot restrict the database file to its owner");
    }
}

/// Maps a unique-constraint violation to [`DbError::Duplicate`], leaving other errors alone.
/// The object whose `id_column` or `name_column` equals `id_or_name` (a UUID is taken as an
/// id, anything else as a name), read with `select` (a SELECT without a WHERE clause) and
/// converted to its API type.
async fn lookup<Row, Object>(
    db: &Db,
    select: &str,
    (id_column, name_column): (&str, &str),
    id_or_name: &str,
) -> Result<Option<Object>, DbError>
where
    Row: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    Object: TryFrom<Row, Error = DbError>,
{
    let column = match id_or_name.parse::<uuid::Uuid>() {
        Ok(_) => id_column,
        Err(_) => name_column,
    };
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{select} WHERE {column} = ?")))
            .bind(id_or_name.to_owned())
            .fetch_optional(db.pool())
            .await?;
    row.map(Object::try_from).transpose()
}

fn duplicate_as(what: &'static str) -> impl Fn(sqlx::Error) -> DbError {
    move |error| match error.as_database_error() {
        Some(database_error) if database_error.is_unique_violation() => DbError::Duplicate { what },
        _ => DbError::Query(error),
    }
}

fn parse_id<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, DbError> {
    text.parse().map_err(|_| DbError::Corrupt {
        what,
        value: text.to_owned(),
    })
}

fn to_json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|source| DbError::Json { what, source })
}

fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|source| DbError::Json { what, source })
}

/// Integer columns are i64 in SQLite; the API's counts and sizes are unsigned.
fn unsigned<T: TryFrom<i64>>(what: &'static str, value: i64) -> Result<T, DbError> {
    T::try_from(value).map_err(|_| DbError::Corrupt {
        what,
        value: value.to_string(),
    })
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
