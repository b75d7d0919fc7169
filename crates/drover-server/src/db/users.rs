//! Users and their login tokens. Passwords arrive here already hashed, tokens as their SHA-256.

use super::{Db, DbError, duplicate_as};
use chrono::{DateTime, Utc};

pub async fn count(db: &Db) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db.pool())
        .await?)
}

pub async fn insert(db: &Db, username: &str, password_hash: &str) -> Result<(), DbError> {
    sqlx::query("INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(username.to_owned())
        .bind(password_hash.to_owned())
        .bind(Utc::now())
        .execute(db.pool())
        .await
        .map_err(duplicate_as("username"))?;
    Ok(())
}

/// The user's id and password hash.
pub async fn credentials(db: &Db, username: &str) -> Result<Option<(String, String)>, DbError> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM users WHERE username = ?")
            .bind(username.to_owned())
            .fetch_optional(db.pool())
            .await?,
    )
}

pub async fn insert_token(
    db: &Db,
    token_sha256: &str,
    user_id: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO tokens (token_sha256, user_id, expires_at, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(token_sha256.to_owned())
    .bind(user_id.to_owned())
    .bind(expires_at)
    .bind(Utc::now())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The user name a token belongs to, and when the token expires.
pub async fn token_owner(
    db: &Db,
    token_sha256: &str,
) -> Result<Option<(String, DateTime<Utc>)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT users.username, tokens.expires_at FROM tokens \
         JOIN users ON users.id = tokens.user_id WHERE tokens.token_sha256 = ?",
    )
    .bind(token_sha256.to_owned())
    .fetch_optional(db.pool())
    .await?)
}
