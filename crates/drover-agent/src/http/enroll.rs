//! `POST /v1/enroll` and `POST /v1/enroll/complete`: the two enrollment calls, before the agent
//! trusts any server. The logic is in `crate::enrollment`.

use super::AgentState;
use crate::error::AgentError;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use drover_api::agent::{EnrollBegin, EnrollComplete, EnrollCsr};
use std::sync::Arc;

pub async fn begin(
    State(state): State<Arc<AgentState>>,
    body: Result<Json<EnrollBegin>, JsonRejection>,
) -> Result<Json<EnrollCsr>, AgentError> {
    let Json(request) = body?;
    state.enrollment.begin(&request.code).map(Json)
}

pub async fn complete(
    State(state): State<Arc<AgentState>>,
    body: Result<Json<EnrollComplete>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Json(request) = body?;
    state.enrollment.complete(&request)?;
    Ok(StatusCode::NO_CONTENT)
}
