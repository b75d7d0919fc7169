//! The nftables rules of a network, one table per network (`drover-BRIDGE`) so that removing
//! the network removes exactly its rules. A `nat` network masquerades its subnet and admits
//! replies only; an `isolated` one reaches the host's DHCP and DNS and nothing else; an overlay
//! keeps each host's gateway and DHCP server off the tunnel, so that every host answers only
//! its own VMs.
//!
//! With `br_netfilter` loaded, frames bridged between two ports of a network's bridge pass the
//! `ip` forward hook too, with the bridge as both input and output: those are accepted first, so
//! VMs of one network always reach each other.

use super::NetworkError;
use super::command;
use drover_api::NetworkMode;
use drover_api::agent::AgentNetwork;

/// The name of the network's tables (one per family).
pub fn table(network: &AgentNetwork) -> String {
    format!("drover-{}", network.bridge)
}

/// The network's rules as an `nft -f` script that replaces its tables atomically; `None` when
/// the network needs no rule (a bridged network).
pub fn ruleset(network: &AgentNetwork, vxlan: Option<&str>) -> Option<String> {
    let table = table(network);
    let bridge = &network.bridge;
    let mut script = String::new();
    // "add" then "delete" then define: replaces the table whether or not it existed, in one
    // transaction, so re-applying never leaves a moment without rules.
    let mut replace = |family: &str, body: String| {
        script.push_str(&format!(
            "add table {family} {table}\ndelete table {family} {table}\ntable {family} {table} {{\n{body}}}\n"
        ));
    };
    match network.mode {
        NetworkMode::Bridged => return None,
        NetworkMode::Nat => {
            let subnet = network.subnet.as_deref()?;
            replace(
                "ip",
                format!(
                    "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
                     ip saddr {subnet} ip daddr != {subnet} masquerade\n  }}\n  \
                     chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
                     iifname \"{bridge}\" accept\n    oifname \"{bridge}\" ct state established,related accept\n    \
                     oifname \"{bridge}\" drop\n  }}\n"
                ),
            );
        }
        NetworkMode::Isolated => replace(
            "ip",
            format!(
                "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
                 iifname \"{bridge}\" udp dport {{ 53, 67 }} accept\n    iifname \"{bridge}\" tcp dport 53 accept\n    \
                 iifname \"{bridge}\" drop\n  }}\n  \
                 chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
                 iifname \"{bridge}\" oifname \"{bridge}\" accept\n    \
                 iifname \"{bridge}\" drop\n    oifname \"{bridge}\" drop\n  }}\n"
            ),
        ),
    }
    if let Some(vxlan) = vxlan {
        replace(
            "bridge",
            format!(
                "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
                 oifname \"{vxlan}\" udp dport {{ 67, 68 }} drop\n    iifname \"{vxlan}\" udp dport {{ 67, 68 }} drop\n  }}\n  \
                 chain input {{\n    type filter hook input priority filter; policy accept;\n    \
                 iifname \"{vxlan}\" drop\n  }}\n  \
                 chain output {{\n    type filter hook output priority filter; policy accept;\n    \
                 oifname \"{vxlan}\" drop\n  }}\n"
            ),
        );
    }
    Some(script)
}

pub fn apply(script: &str) -> Result<(), NetworkError> {
    command::run_with_input("nft", &["-f", "-"], Some(script)).map(drop)
}

/// Removes the network's tables, wherever they exist.
pub fn remove(network: &AgentNetwork) {
    let table = table(network);
    for family in ["ip", "bridge"] {
        command::run_quietly("nft", &["delete", "table", family, &table]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sample_network as network;

    #[test]
    fn nat_masquerades_its_subnet_and_admits_replies_only() {
        let script = ruleset(&network(NetworkMode::Nat), None).expect("rules");
        assert!(
            script.starts_with("add table ip drover-dr-lab\ndelete table ip drover-dr-lab\n"),
            "{script}"
        );
        assert!(
            script.contains("ip saddr 10.10.0.0/24 ip daddr != 10.10.0.0/24 masquerade"),
            "{script}"
        );
        assert!(
            script.contains("oifname \"dr-lab\" ct state established,related accept"),
            "{script}"
        );
        assert!(!script.contains("table bridge"), "{script}");
    }

    #[test]
    fn isolated_reaches_dhcp_and_dns_only_and_overlays_keep_them_local() {
        let script = ruleset(&network(NetworkMode::Isolated), Some("dv10000")).expect("rules");
        assert!(
            script.contains("iifname \"dr-lab\" udp dport { 53, 67 } accept"),
            "{script}"
        );
        assert!(script.contains("iifname \"dr-lab\" drop"), "{script}");
        assert!(
            script.contains("iifname \"dr-lab\" oifname \"dr-lab\" accept"),
            "VMs of one network reach each other: {script}"
        );
        assert!(!script.contains("masquerade"), "{script}");
        assert!(script.contains("table bridge drover-dr-lab"), "{script}");
        assert!(
            script.contains("oifname \"dv10000\" udp dport { 67, 68 } drop"),
            "{script}"
        );
    }

    #[test]
    fn bridged_networks_have_no_rules() {
        assert_eq!(ruleset(&network(NetworkMode::Bridged), None), None);
    }
}
