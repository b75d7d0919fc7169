//! What the agent reports of its machine ([`AgentHostInfo`]): name, CPUs, CPU load, memory,
//! free disk, accelerator. Read fresh on every call from `/proc` and `statvfs`; nothing is cached.

use drover_api::Accelerator;
use drover_api::agent::AgentHostInfo;
use std::path::Path;

/// The machine's host name, as the kernel knows it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `(total, available)` memory in MiB from the text of `/proc/meminfo`.
fn parse_meminfo(text: &str) -> (u64, u64) {
    let field_mib = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or_default()
    };
    (field_mib("MemTotal"), field_mib("MemAvailable"))
}

/// The one-minute load average of `/proc/loadavg` as a share of `cpus`, 0 to 100. The load
/// average counts runnable tasks, so it may exceed the CPU count: that is a full host.
fn parse_load_percent(text: &str, cpus: u32) -> u32 {
    let load: f64 = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .unwrap_or_default();
    let percent = (load * 100.0 / f64::from(cpus.max(1))).round();
    if percent >= 100.0 {
        100
    } else {
        percent as u32
    }
}

pub fn disk_free_bytes(data_dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(data_dir) {
        Ok(stats) => stats
            .blocks_available()
            .saturating_mul(stats.fragment_size()),
        Err(error) => {
            tracing::warn!(error = %error, dir = %data_dir.display(), "statvfs failed");
            0
        }
    }
}

pub fn host_info(data_dir: &Path, accelerator: Accelerator) -> AgentHostInfo {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (memory_mib, memory_free_mib) = parse_meminfo(&meminfo);
    let cpus = std::thread::available_parallelism()
        .map(|count| u32::try_from(count.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    AgentHostInfo {
        hostname: hostname(),
        cpu_load_percent: parse_load_percent(&loadavg, cpus),
        cpus,
        memory_mib,
        memory_free_mib,
        disk_free_bytes: disk_free_bytes(data_dir),
        accelerator,
        agent_version: drover_api::VERSION.to_owned(),
        roles: vec!["host".to_owned()],
        transfer_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:        8048576 kB\nMemFree:          100000 kB\nMemAvailable:    2097152 kB\n";
        assert_eq!(parse_meminfo(text), (7859, 2048));
        assert_eq!(parse_meminfo(""), (0, 0));
        assert_eq!(parse_meminfo("MemTotalX: 5 kB\n"), (0, 0));
    }

    #[test]
    fn load_average_as_a_share_of_cpus() {
        let cases = [
            ("0.50 0.40 0.30 1/200 1234\n", 2, 25),
            ("3.00 1.00 1.00 4/200 1234\n", 2, 100),
            ("0.00 0.00 0.00 1/1 1\n", 4, 0),
            ("", 2, 0),
            ("1.00", 0, 100),
        ];
        for (text, cpus, percent) in cases {
            assert_eq!(
                parse_load_percent(text, cpus),
                percent,
                "{text:?} on {cpus}"
            );
        }
    }

    #[test]
    fn reads_this_machine() {
        let dir = tempfile::tempdir().expect("temp dir");
        let info = host_info(dir.path(), Accelerator::Tcg);
        assert!(info.cpus >= 1);
        assert!(info.memory_mib >= info.memory_free_mib && info.memory_mib > 0);
        assert!(info.disk_free_bytes > 0);
        assert!(info.cpu_load_percent <= 100);
        assert_eq!(info.roles, ["host"]);
        assert!(!info.hostname.is_empty());
    }
}
