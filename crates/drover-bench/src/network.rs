//! `drover-bench network` (issue 6): how long a host takes to realize a network (bridge, gateway
//! address, nftables rules, dnsmasq; an uplink for bridged, a VXLAN tunnel for an overlay) and to
//! remove it again. The bench re-runs itself inside a network namespace it makes and deletes, so
//! the machine's own network never changes. Needs root, `ip`, `nft` and `dnsmasq`.

use drover_agent::network::Networks;
use drover_api::agent::{AgentNetwork, AgentOverlay};
use drover_api::network::NetworkHostState;
use drover_api::{NetworkId, NetworkMode};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    /// Networks realized and removed per kind.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Set when the bench runs inside its namespace (internal).
    #[arg(long, hide = true)]
    inside: bool,
}

pub async fn run(args: NetworkArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    if args.inside {
        return bench(args.rounds).await;
    }
    let netns = format!("drvbench{}", std::process::id());
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &netns])
            .status()?
            .success(),
        "cannot make namespace {netns} (run as root)"
    );
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(std::env::current_exe()?)
        .args(["network", "--inside", "--rounds", &args.rounds.to_string()])
        .status()
        .await;
    // dnsmasq instances left by a failed run die with their namespace's processes.
    if let Ok(output) = Command::new("ip").args(["netns", "pids", &netns]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    anyhow::ensure!(status?.success(), "the benchmark failed");
    Ok(())
}

fn spec(round: usize, mode: NetworkMode, overlay: bool) -> AgentNetwork {
    let name = format!("b{}{round}", mode.as_str().chars().next().unwrap_or('x'));
    let third = round % 250;
    let second = match (mode, overlay) {
        (NetworkMode::Nat, _) => 240,
        (NetworkMode::Isolated, false) => 241,
        _ => 242,
    };
    let subnet = (mode != NetworkMode::Bridged).then(|| format!("10.{second}.{third}.0/24"));
    AgentNetwork {
        id: NetworkId::new(),
        bridge: format!("dr-{name}"),
        name,
        mode,
        gateway: subnet.as_ref().map(|_| format!("10.{second}.{third}.1")),
        dhcp_start: subnet.as_ref().map(|_| format!("10.{second}.{third}.2")),
        dhcp_end: subnet.as_ref().map(|_| format!("10.{second}.{third}.254")),
        subnet,
        vlan: None,
        uplink: (mode == NetworkMode::Bridged).then(|| "up0".to_owned()),
        overlay: overlay.then(|| AgentOverlay {
            vni: 20_000 + u32::try_from(round).unwrap_or(0),
            local: "10.99.0.1".to_owned(),
            peers: vec!["10.99.0.2".to_owned()],
        }),
    }
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn summary(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let median = times[times.len() / 2];
    format!(
        "{:>8.1} {:>8.1} {:>8.1}",
        milliseconds(times[0]),
        milliseconds(median),
        milliseconds(times[times.len() - 1])
    )
}

async fn bench(rounds: usize) -> anyhow::Result<()> {
    // The uplink of bridged networks and the address overlays tunnel from.
    for script in [
        "ip link set lo up",
        "ip link add up0 type veth peer name up1",
        "ip link add mgmt0 type veth peer name mgmt1",
        "ip addr add 10.99.0.1/24 dev mgmt0",
        "ip link set mgmt0 up",
        "ip link set mgmt1 up",
    ] {
        let words: Vec<&str> = script.split_whitespace().collect();
        anyhow::ensure!(
            Command::new(words[0]).args(&words[1..]).status()?.success(),
            "`{script}` failed"
        );
    }
    let dir = tempfile::tempdir()?;
    let networks = Networks::open(dir.path(), 4789)?;
    println!("network realization on one host, {rounds} rounds (milliseconds)");
    println!(
        "{:<24} {:>8} {:>8} {:>8}   {:>8}",
        "kind", "min", "median", "max", "remove"
    );
    for (label, mode, overlay) in [
        ("nat (+dnsmasq, nft)", NetworkMode::Nat, false),
        ("isolated (+dnsmasq, nft)", NetworkMode::Isolated, false),
        ("overlay (+vxlan)", NetworkMode::Isolated, true),
        ("bridged (uplink)", NetworkMode::Bridged, false),
    ] {
        let mut realize = Vec::with_capacity(rounds);
        let mut remove = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let network = spec(round, mode, overlay);
            let started = Instant::now();
            let status = networks.realize(network.clone()).await?;
            realize.push(started.elapsed());
            anyhow::ensure!(
                status.state == NetworkHostState::Ready,
                "{label}: {:?}",
                status.reason
            );
            let started = Instant::now();
            networks.remove(network.id).await?;
            remove.push(started.elapsed());
        }
        let mut remove_sorted = remove.clone();
        remove_sorted.sort_unstable();
        println!(
            "{label:<24} {}   {:>8.1}",
            summary(&mut realize),
            milliseconds(remove_sorted[remove_sorted.len() / 2])
        );
    }
    Ok(())
}
