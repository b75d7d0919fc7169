//! The one error body of every Drover HTTP endpoint, server and agent alike:
//! `{"error": {"code": "vm_not_found", "message": "...", "action": "..."}}`.
//! Codes are stable identifiers that scripts may match on; they are listed in `docs/api.md`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, in a form for scripts (`code`) and for people (`message`, `action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `vm_not_found`.
    pub code: String,
    /// What happened, in one sentence.
    pub message: String,
    /// What the user should do about it.
    pub action: String,
}

impl ErrorDetail {
    pub fn new(code: &str, message: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            action: action.into(),
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorDetail {}

impl From<ErrorDetail> for ErrorBody {
    fn from(error: ErrorDetail) -> Self {
        Self { error }
    }
}
