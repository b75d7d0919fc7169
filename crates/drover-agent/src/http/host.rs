//! `GET /v1/host`: the machine's figures.

use super::AgentState;
use axum::Json;
use axum::extract::State;
use drover_api::agent::AgentHostInfo;
use std::sync::Arc;

pub async fn get(State(state): State<Arc<AgentState>>) -> Json<AgentHostInfo> {
    Json(state.host_info())
}

impl AgentState {
    pub fn host_info(&self) -> AgentHostInfo {
        let mut info = crate::host::host_info(&self.data_dir, self.driver.accelerator());
        info.roles.clone_from(&self.roles);
        info.transfer_port = Some(self.transfer_port);
        info
    }
}
