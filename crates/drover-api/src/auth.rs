//! Logging in: `POST /api/v1/auth/login` trades a user name and password for a bearer token.
//! Only the wire types live here; hashing and token storage are the server's business.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a token lives when the login request names no `ttl_seconds`: seven days.
pub const DEFAULT_TOKEN_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Body of `POST /api/v1/auth/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// Lifetime of the token; [`DEFAULT_TOKEN_TTL_SECONDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

// The password must never reach a log line through `{:?}`.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

/// Answer to a successful login. Send the token as `Authorization: Bearer TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The bearer token; the server keeps only its hash.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
}
