//! Typed helpers for the commands Drover uses. Anything else goes through [`Qmp::execute`].

use serde::Deserialize;
use serde_json::Value;

use crate::{Qmp, QmpError};

/// Reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// QEMU's run state: `running`, `paused`, `prelaunch`, `shutdown`, `inmigrate`, ...
    pub status: String,
    /// Whether the vCPUs run.
    pub running: bool,
}

impl Qmp {
    pub async fn query_status(&self) -> Result<StatusInfo, QmpError> {
        let value = self.execute("query-status", Value::Null).await?;
        serde_json::from_value(value)
            .map_err(|error| QmpError::Protocol(format!("query-status reply: {error}")))
    }

    /// Pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", Value::Null).await.map(drop)
    }

    /// Resumes the vCPUs (also starts a VM launched with `-S`).
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", Value::Null).await.map(drop)
    }

    /// Hard reset, like the reset button.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.execute("system_reset", Value::Null).await.map(drop)
    }

    /// Presses the ACPI power button; the guest decides what to do.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", Value::Null)
            .await
            .map(drop)
    }

    /// Adds a network backend; `arguments` holds its `type`, `id` and the type's options.
    pub async fn netdev_add(&self, arguments: Value) -> Result<(), QmpError> {
        self.execute("netdev_add", arguments).await.map(drop)
    }

    pub async fn netdev_del(&self, id: &str) -> Result<(), QmpError> {
        self.execute("netdev_del", serde_json::json!({ "id": id }))
            .await
            .map(drop)
    }

    /// Adds a device; `arguments` holds its `driver`, `id` and properties.
    pub async fn device_add(&self, arguments: Value) -> Result<(), QmpError> {
        self.execute("device_add", arguments).await.map(drop)
    }

    /// Asks for a device's removal. For a PCI device the guest must agree: the device is gone
    /// only when the `DEVICE_DELETED` event with its id comes.
    pub async fn device_del(&self, id: &str) -> Result<(), QmpError> {
        self.execute("device_del", serde_json::json!({ "id": id }))
            .await
            .map(drop)
    }

    /// Runs a human monitor (HMP) command and returns its output, for the few things QMP lacks.
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, QmpError> {
        let value = self
            .execute(
                "human-monitor-command",
                serde_json::json!({ "command-line": command_line }),
            )
            .await?;
        value.as_str().map(str::to_owned).ok_or_else(|| {
            QmpError::Protocol(format!("human-monitor-command reply is not text: {value}"))
        })
    }

    /// Adds a host forwarding rule (`tcp:127.0.0.1:8080-:80`) to a running user-mode backend.
    /// QMP has no command for it; HMP answers an empty text on success and the reason otherwise.
    pub async fn hostfwd_add(&self, netdev: &str, rule: &str) -> Result<(), QmpError> {
        let output = self
            .human_monitor_command(&format!("hostfwd_add {netdev} {rule}"))
            .await?;
        let output = output.trim();
        if output.is_empty() {
            return Ok(());
        }
        Err(QmpError::Command {
            command: "hostfwd_add".to_owned(),
            class: "GenericError".to_owned(),
            desc: output.to_owned(),
        })
    }

    /// Removes a host forwarding rule by its host side (`udp:127.0.0.1:5353`) from a running
    /// user-mode backend. HMP answers "... removed" or "... not found" (or why the rule is
    /// malformed); only the first is success.
    pub async fn hostfwd_remove(&self, netdev: &str, source: &str) -> Result<(), QmpError> {
        let output = self
            .human_monitor_command(&format!("hostfwd_remove {netdev} {source}"))
            .await?;
        let output = output.trim();
        if output.ends_with("removed") {
            return Ok(());
        }
        Err(QmpError::Command {
            command: "hostfwd_remove".to_owned(),
            class: "GenericError".to_owned(),
            desc: output.to_owned(),
        })
    }

    /// Ends QEMU. QEMU may close the socket before its reply arrives, so a closed connection
    /// counts as success here.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", Value::Null).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
