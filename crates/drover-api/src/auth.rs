//! Logging in: `POST /api/v1/auth/login` trades a user name and password for a bearer token,
//! sent afterwards as `Authorization: Bearer TOKEN` on every call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// Lifetime of the token in seconds; the server's default (7 days) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// Answer of `POST /api/v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The bearer token; the server keeps only its hash.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
}
