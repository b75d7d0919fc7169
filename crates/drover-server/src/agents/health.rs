//! What a host's own report says about its health: Responding, or Needs Attention with the
//! reason in words. Reachability (Not Responding) is the supervisor's business, not this one's.

use drover_api::HostState;
use drover_api::agent::AgentHostInfo;

/// Below this much free space where the agent keeps VM disks, new disks and growing overlays
/// may fail, so the host needs an administrator's attention.
pub const LOW_DISK_BYTES: u64 = 128 << 20;

/// The state and reason a host's report earns.
pub fn assess(info: &AgentHostInfo) -> (HostState, Option<String>) {
    if info.agent_version != drover_api::VERSION {
        return (
            HostState::NeedsAttention,
            Some(format!(
                "agent version {} differs from server version {}; install the server's version on the host",
                info.agent_version,
                drover_api::VERSION
            )),
        );
    }
    if info.disk_free_bytes < LOW_DISK_BYTES {
        return (
            HostState::NeedsAttention,
            Some(format!(
                "only {} free for VM disks; free space on the host",
                drover_api::size::format_bytes(info.disk_free_bytes)
            )),
        );
    }
    (HostState::Responding, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::Accelerator;

    fn info(version: &str, disk_free_bytes: u64) -> AgentHostInfo {
        AgentHostInfo {
            hostname: "h".into(),
            cpus: 2,
            memory_mib: 1024,
            memory_free_mib: 512,
            disk_free_bytes,
            accelerator: Accelerator::Tcg,
            cpu_load_percent: 0,
            agent_version: version.into(),
            roles: vec!["host".into()],
            transfer_port: None,
        }
    }

    #[test]
    fn reports_earn_states() {
        let cases = [
            (
                info(drover_api::VERSION, 10 << 30),
                HostState::Responding,
                "",
            ),
            (
                info("0.0.1", 10 << 30),
                HostState::NeedsAttention,
                "agent version 0.0.1",
            ),
            (
                info(drover_api::VERSION, 100 << 20),
                HostState::NeedsAttention,
                "only 100 MiB free",
            ),
        ];
        for (report, state, reason) in cases {
            let (got_state, got_reason) = assess(&report);
            assert_eq!(got_state, state, "{report:?}");
            assert!(
                got_reason.unwrap_or_default().contains(reason),
                "{report:?}"
            );
        }
    }
}
