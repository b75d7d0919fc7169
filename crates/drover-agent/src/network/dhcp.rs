//! One dnsmasq per network on this host: DHCP with a static lease for each VM NIC here (so a VM
//! keeps its address on any host) and DNS, listening on the network's bridge only. dnsmasq runs
//! daemonized with a pid file, outside the agent's process tree, so it outlives an agent
//! restart and is re-adopted, not restarted. New leases are read on SIGHUP, with no restart.

use super::NetworkError;
use super::command;
use drover_api::NetworkMode;
use drover_api::agent::AgentNetwork;
use ipnet::Ipv4Net;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The files of a network's DHCP server, in its directory.
pub struct DhcpFiles {
    dir: PathBuf,
}

impl DhcpFiles {
    pub fn new(dir: &Path) -> DhcpFiles {
        DhcpFiles {
            dir: dir.to_path_buf(),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }

    /// `MAC,IP` lines, one per VM NIC on this host.
    fn hosts_file(&self) -> PathBuf {
        self.dir.join("dhcp-hosts")
    }

    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }
}

/// Whether the network gets a DHCP server: `nat` and `isolated` networks with a range.
pub fn wanted(network: &AgentNetwork) -> bool {
    network.mode != NetworkMode::Bridged && network.dhcp_start.is_some()
}

/// dnsmasq's arguments for `network`. The range is static-only: dnsmasq hands out exactly the
/// addresses the server reserved, and stays silent for a MAC it does not know (on an overlay,
/// the other hosts' VMs).
pub fn arguments(
    network: &AgentNetwork,
    files: &DhcpFiles,
    mtu: Option<u32>,
) -> Result<Vec<String>, NetworkError> {
    let invalid =
        || NetworkError::Invalid(format!("network {} has no usable subnet", network.name));
    let subnet: Ipv4Net = network
        .subnet
        .as_deref()
        .and_then(|text| text.parse().ok())
        .ok_or_else(invalid)?;
    let mut args = vec![
        "--conf-file=/dev/null".to_owned(),
        format!("--pid-file={}", files.pid_file().display()),
        format!("--interface={}", network.bridge),
        "--bind-interfaces".to_owned(),
        "--except-interface=lo".to_owned(),
        "--no-hosts".to_owned(),
        "--user=root".to_owned(),
        format!(
            "--dhcp-range={},static,{},1h",
            subnet.network(),
            subnet.netmask()
        ),
        format!("--dhcp-hostsfile={}", files.hosts_file().display()),
        format!("--dhcp-leasefile={}", files.lease_file().display()),
        "--dhcp-authoritative".to_owned(),
    ];
    match (network.mode, &network.gateway) {
        (NetworkMode::Nat, Some(gateway)) => {
            args.push(format!("--dhcp-option=option:router,{gateway}"));
        }
        // No router: an isolated network has no way out.
        _ => args.push("--dhcp-option=option:router".to_owned()),
    }
    // Forced: many clients (busybox udhcpc among them) do not ask for option 26, and a guest
    // at 1500 on an overlay loses every full-sized frame.
    if let Some(mtu) = mtu {
        args.push(format!("--dhcp-option-force=option:mtu,{mtu}"));
    }
    Ok(args)
}

/// The running dnsmasq of this network, if its pid file names a live dnsmasq.
fn running(files: &DhcpFiles) -> Option<Pid> {
    let text = std::fs::read_to_string(files.pid_file()).ok()?;
    let pid = Pid::from_raw(text.trim().parse().ok()?);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dnsmasq").then_some(pid)
}

/// Writes the static leases (sorted, so the file is stable).
pub fn write_hosts(
    files: &DhcpFiles,
    leases: &BTreeMap<String, String>,
) -> Result<(), NetworkError> {
    let text: String = leases
        .iter()
        .map(|(mac, ip)| format!("{mac},{ip}\n"))
        .collect();
    let path = files.hosts_file();
    std::fs::write(&path, text).map_err(|source| NetworkError::Io { path, source })
}

/// Starts dnsmasq unless it runs (then it is re-adopted and told to re-read its leases).
pub fn ensure(
    network: &AgentNetwork,
    files: &DhcpFiles,
    mtu: Option<u32>,
) -> Result<(), NetworkError> {
    if running(files).is_some() {
        return reload(files);
    }
    let args = arguments(network, files, mtu)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // dnsmasq forks into the background once it listens, and exits non-zero if it cannot.
    command::run("dnsmasq", &args)?;
    Ok(())
}

/// Makes a running dnsmasq re-read its static leases.
pub fn reload(files: &DhcpFiles) -> Result<(), NetworkError> {
    if let Some(pid) = running(files) {
        kill(pid, Signal::SIGHUP).map_err(|error| NetworkError::Command {
            command: format!("kill -HUP {pid}"),
            output: error.to_string(),
        })?;
    }
    Ok(())
}

/// Ends the network's dnsmasq and waits (bounded) until it is gone.
pub fn stop(files: &DhcpFiles) {
    let Some(pid) = running(files) else {
        return;
    };
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(files).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if running(files).is_some() {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The address dnsmasq leased to `mac`, from its lease file (`EXPIRY MAC IP NAME CLIENTID`).
pub fn leased_address(files: &DhcpFiles, mac: &str) -> Option<String> {
    let text = std::fs::read_to_string(files.lease_file()).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, lease_mac, ip) = (fields.next()?, fields.next()?, fields.next()?);
        lease_mac.eq_ignore_ascii_case(mac).then(|| ip.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sample_network as network;

    #[test]
    fn static_leases_only_on_the_bridge_with_a_router_for_nat() {
        let files = DhcpFiles::new(Path::new("/n"));
        let args = arguments(&network(NetworkMode::Nat), &files, None).expect("args");
        for expected in [
            "--interface=dr-lab",
            "--bind-interfaces",
            "--dhcp-range=10.10.0.0,static,255.255.255.0,1h",
            "--dhcp-hostsfile=/n/dhcp-hosts",
            "--pid-file=/n/dnsmasq.pid",
            "--dhcp-option=option:router,10.10.0.1",
        ] {
            assert!(
                args.iter().any(|arg| arg == expected),
                "{expected} in {args:?}"
            );
        }
        let isolated =
            arguments(&network(NetworkMode::Isolated), &files, Some(1450)).expect("args");
        assert!(
            isolated
                .iter()
                .any(|arg| arg == "--dhcp-option=option:router"),
            "{isolated:?}"
        );
        assert!(
            isolated
                .iter()
                .any(|arg| arg == "--dhcp-option-force=option:mtu,1450"),
            "{isolated:?}"
        );
        assert!(!wanted(&network(NetworkMode::Bridged)));
    }

    #[test]
    fn leases_are_read_by_mac() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = DhcpFiles::new(dir.path());
        std::fs::write(
            files.lease_file(),
            "1700000000 52:54:00:d0:00:01 10.10.0.2 * 01:52:54:00:d0:00:01\n\
             1700000000 52:54:00:d0:00:02 10.10.0.3 tiny *\n",
        )
        .expect("write");
        assert_eq!(
            leased_address(&files, "52:54:00:D0:00:02").as_deref(),
            Some("10.10.0.3")
        );
        assert_eq!(leased_address(&files, "52:54:00:d0:00:09"), None);
    }
}
