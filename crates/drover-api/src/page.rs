//! One page of a list. Lists are paged by an opaque cursor so that a page costs the same at row
//! 20,000 as at row 0.

use serde::{Deserialize, Serialize};

/// Largest page a list endpoint returns; `limit` above it is clamped.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query parameters every list endpoint takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
pub struct PageRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}
