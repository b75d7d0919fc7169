//! `POST /api/v1/auth/login` and the bearer-token check in front of every other route. Passwords
//! are stored as argon2 hashes, tokens as SHA-256: neither can be read back from the database.

use super::{ApiError, ApiJson};
use crate::db;
use crate::state::AppState;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{Duration, Utc};
use drover_api::auth::{DEFAULT_TOKEN_TTL_SECONDS, LoginRequest, LoginResponse};
use rand::Rng;
use sha2::{Digest, Sha256};

/// The user a request's token belongs to; handlers record it as the owner of their jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser(pub String);

/// The user made at first start.
pub const ADMIN: &str = "admin";
/// Longest token lifetime a login may ask for: a year.
const MAX_TOKEN_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// Makes the `admin` user when there is no user yet, with `password` or a generated one, and
/// returns the password so that it can be shown once. `None` when users exist already.
pub async fn ensure_admin(db: &db::Db, password: Option<String>) -> anyhow::Result<Option<String>> {
    if db::users::count(db).await? > 0 {
        return Ok(None);
    }
    let password = password.unwrap_or_else(|| {
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(20)
            .map(char::from)
            .collect()
    });
    let hash = hash_password(password.clone()).await?;
    db::users::insert(db, ADMIN, &hash).await?;
    Ok(Some(password))
}

async fn hash_password(password: String) -> anyhow::Result<String> {
    // Argon2 is deliberately slow: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
    })
    .await?
}

async fn verify_password(password: String, stored_hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&stored_hash)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok())
    })
    .await
    .map_err(ApiError::internal)?
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = drover_api::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (user_id, stored_hash) = db::users::credentials(&state.db, &request.username)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    if !verify_password(request.password, stored_hash).await? {
        return Err(ApiError::InvalidCredentials);
    }
    let ttl = request
        .ttl_seconds
        .unwrap_or(DEFAULT_TOKEN_TTL_SECONDS)
        .clamp(1, MAX_TOKEN_TTL_SECONDS);
    let expires_at = Utc::now() + Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    let token = store_new_token(&state.db, &user_id, expires_at).await?;
    tracing::info!(username = %request.username, "logged in");
    Ok(Json(LoginResponse {
        token,
        expires_at,
        username: request.username,
    }))
}

/// Lets a request through only with a known, unexpired bearer token.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthenticated)?;
    let (username, expires_at) = db::users::token_owner(&state.db, &token_digest(token))
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if expires_at <= Utc::now() {
        return Err(ApiError::TokenExpired);
    }
    request.extensions_mut().insert(CurrentUser(username));
    Ok(next.run(request).await)
}

/// Stores a token for `username` that expires at `expires_at`, as a login would. For tests and
/// for `drover up`, which logs the local CLI in without a password prompt.
pub async fn issue_token(
    db: &db::Db,
    username: &str,
    expires_at: chrono::DateTime<Utc>,
) -> anyhow::Result<String> {
    let (user_id, _) = db::users::credentials(db, username)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user '{username}'"))?;
    Ok(store_new_token(db, &user_id, expires_at).await?)
}

/// A fresh random token; only its digest is stored.
async fn store_new_token(
    db: &db::Db,
    user_id: &str,
    expires_at: chrono::DateTime<Utc>,
) -> Result<String, db::DbError> {
    let token = hex::encode(rand::random::<[u8; 32]>());
    db::users::insert_token(db, &token_digest(&token), user_id, expires_at).await?;
    Ok(token)
}
