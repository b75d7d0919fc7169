//! Address management, pure and synchronous: checking a network's addressing (subnet, gateway,
//! DHCP range, VLAN, interface names) and picking free addresses from its pool. The database
//! keeps what is taken; this module only decides. IPv4 only.

use drover_api::network::{BRIDGE_PREFIX, MAX_INTERFACE_NAME, USER_NETWORK};
use drover_api::{NetworkCreate, NetworkMode};
use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Why a network's settings cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A network's addressing once checked and completed with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub dhcp: Option<(Ipv4Addr, Ipv4Addr)>,
    pub bridge: String,
}

/// The Linux bridge of a network.
pub fn bridge_name(network: &str) -> String {
    format!("{BRIDGE_PREFIX}{network}")
}

/// Whether `name` can be a Linux interface name: at most 15 bytes, no '/', ':' or whitespace,
/// not `.` or `..`.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte.is_ascii_whitespace() || byte == 0)
}

fn invalid(text: impl Into<String>) -> Invalid {
    Invalid(text.into())
}

fn parse_address(what: &str, text: &str) -> Result<Ipv4Addr, Invalid> {
    text.trim()
        .parse()
        .map_err(|_| invalid(format!("{what} '{text}' is not an IPv4 address")))
}

/// Checks a create request and fills in the defaults (gateway: the subnet's first address; DHCP
/// range: every address above the gateway but the broadcast). Overlap with other networks is the
/// caller's check (see [`overlapping`]).
pub fn plan(request: &NetworkCreate) -> Result<Addressing, Invalid> {
    drover_api::vm::validate_name(&request.name).map_err(Invalid)?;
    if request.name == USER_NETWORK {
        return Err(invalid(format!(
            "'{USER_NETWORK}' is the built-in user-mode network; choose another name"
        )));
    }
    let bridge = bridge_name(&request.name);
    if !valid_interface_name(&bridge) {
        return Err(invalid(format!(
            "network name '{}' is too long: its bridge '{bridge}' must fit the {MAX_INTERFACE_NAME}-byte \
             Linux interface name limit, so use at most {} characters",
            request.name,
            MAX_INTERFACE_NAME - BRIDGE_PREFIX.len()
        )));
    }
    if let Some(vlan) = request.vlan
        && !(1..=4094).contains(&vlan)
    {
        return Err(invalid(format!("VLAN {vlan} is outside 1-4094")));
    }
    match request.mode {
        NetworkMode::Bridged => {
            let Some(uplink) = &request.uplink else {
                return Err(invalid("a bridged network needs --uplink IFACE"));
            };
            let vlan_suffix = request.vlan.map_or(0, |vlan| format!(".{vlan}").len());
            if !valid_interface_name(uplink) || uplink.len() + vlan_suffix > MAX_INTERFACE_NAME {
                return Err(invalid(format!(
                    "uplink '{uplink}' is not a valid interface name (with its VLAN suffix, at most {MAX_INTERFACE_NAME} bytes)"
                )));
            }
            if request.overlay {
                return Err(invalid(
                    "a bridged network takes its layer 2 from the uplink; --overlay is for nat and isolated networks",
                ));
            }
        }
        NetworkMode::Nat | NetworkMode::Isolated => {
            if request.uplink.is_some() || request.vlan.is_some() {
                return Err(invalid(format!(
                    "--uplink and --vlan are for bridged networks, not {}",
                    request.mode
                )));
            }
            if request.subnet.is_none() {
                return Err(invalid(format!(
                    "a {} network needs --subnet CIDR, such as 10.10.0.0/24",
                    request.mode
                )));
            }
        }
    }
    let Some(subnet_text) = &request.subnet else {
        if request.gateway.is_some() || request.dhcp_range.is_some() {
            return Err(invalid("--gateway and --dhcp-range need --subnet"));
        }
        return Ok(Addressing {
            subnet: None,
            gateway: None,
            dhcp: None,
            bridge,
        });
    };
    let subnet: Ipv4Net = subnet_text.trim().parse().map_err(|_| {
        invalid(format!(
            "subnet '{subnet_text}' is not an IPv4 CIDR such as 10.10.0.0/24"
        ))
    })?;
    if subnet.network() != subnet.addr() {
        return Err(invalid(format!(
            "subnet '{subnet_text}' has host bits set; did you mean {}?",
            subnet.trunc()
        )));
    }
    if subnet.prefix_len() > 29 {
        return Err(invalid(format!(
            "subnet '{subnet_text}' is too small; use a prefix of /29 or shorter"
        )));
    }
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let usable = |address: Ipv4Addr| (first..=last).contains(&u32::from(address));
    let gateway = match &request.gateway {
        Some(text) => parse_address("gateway", text)?,
        None => Ipv4Addr::from(first),
    };
    if !usable(gateway) {
        return Err(invalid(format!(
            "gateway {gateway} is not a host address of subnet {subnet}"
        )));
    }
    let (start, end) = match &request.dhcp_range {
        Some(text) => {
            let (start, end) = text.split_once('-').ok_or_else(|| {
                invalid(format!(
                    "DHCP range '{text}' is not FIRST-LAST, such as 10.10.0.10-10.10.0.200"
                ))
            })?;
            let (start, end) = (
                parse_address("DHCP range start", start)?,
                parse_address("DHCP range end", end)?,
            );
            if start > end {
                return Err(invalid(format!("DHCP range {text} ends before it starts")));
            }
            if !usable(start) || !usable(end) {
                return Err(invalid(format!(
                    "DHCP range {text} is not inside the host addresses of subnet {subnet}"
                )));
            }
            if start <= gateway && gateway <= end {
                return Err(invalid(format!(
                    "DHCP range {text} contains the gateway {gateway}"
                )));
            }
            (start, end)
        }
        None if u32::from(gateway) < last => {
            (Ipv4Addr::from(u32::from(gateway) + 1), Ipv4Addr::from(last))
        }
        None => (
            Ipv4Addr::from(first),
            Ipv4Addr::from(u32::from(gateway) - 1),
        ),
    };
    Ok(Addressing {
        subnet: Some(subnet),
        gateway: Some(gateway),
        dhcp: Some((start, end)),
        bridge,
    })
}

/// The first of `others` (name, subnet text) whose subnet overlaps `subnet`.
pub fn overlapping<'a>(
    subnet: &Ipv4Net,
    others: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<(&'a str, Ipv4Net)> {
    others.into_iter().find_map(|(name, text)| {
        let other: Ipv4Net = text.parse().ok()?;
        (other.contains(&subnet.network()) || subnet.contains(&other.network()))
            .then_some((name, other))
    })
}

/// The lowest address of `start..=end` not in `taken`.
pub fn first_free(start: Ipv4Addr, end: Ipv4Addr, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (u32::from(start)..=u32::from(end))
        .map(Ipv4Addr::from)
        .find(|address| !taken.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: NetworkMode) -> NetworkCreate {
        NetworkCreate {
            name: "lab".into(),
            mode,
            subnet: Some("10.10.0.0/24".into()),
            gateway: None,
            dhcp_range: None,
            vlan: None,
            uplink: None,
            overlay: false,
            group: None,
        }
    }

    #[test]
    fn defaults_fill_the_subnet_above_the_gateway() {
        let plan = plan(&request(NetworkMode::Nat)).expect("valid");
        assert_eq!(plan.gateway, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(
            plan.dhcp,
            Some((Ipv4Addr::new(10, 10, 0, 2), Ipv4Addr::new(10, 10, 0, 254)))
        );
        assert_eq!(plan.bridge, "dr-lab");
        let mut high_gateway = request(NetworkMode::Isolated);
        high_gateway.gateway = Some("10.10.0.254".into());
        let plan = super::plan(&high_gateway).expect("valid");
        assert_eq!(
            plan.dhcp,
            Some((Ipv4Addr::new(10, 10, 0, 1), Ipv4Addr::new(10, 10, 0, 253)))
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let with = |change: &dyn Fn(&mut NetworkCreate)| {
            let mut request = request(NetworkMode::Nat);
            change(&mut request);
            request
        };
        let cases: Vec<(NetworkCreate, &str)> = vec![
            (
                with(&|r| r.gateway = Some("10.11.0.1".into())),
                "not a host address",
            ),
            (
                with(&|r| r.gateway = Some("10.10.0.255".into())),
                "not a host address",
            ),
            (
                with(&|r| r.dhcp_range = Some("10.10.0.100-10.10.1.5".into())),
                "not inside",
            ),
            (
                with(&|r| r.dhcp_range = Some("10.10.0.1-10.10.0.50".into())),
                "contains the gateway",
            ),
            (
                with(&|r| r.dhcp_range = Some("10.10.0.50-10.10.0.10".into())),
                "ends before",
            ),
            (
                with(&|r| r.dhcp_range = Some("10.10.0.50".into())),
                "FIRST-LAST",
            ),
            (
                with(&|r| r.subnet = Some("10.10.0.1/24".into())),
                "host bits",
            ),
            (with(&|r| r.subnet = Some("banana".into())), "CIDR"),
            (with(&|r| r.subnet = None), "needs --subnet"),
            (with(&|r| r.name = "much-too-long".into()), "15-byte"),
            (with(&|r| r.name = "user".into()), "built-in"),
            (with(&|r| r.name = "a b".into()), "not a valid name"),
            (with(&|r| r.vlan = Some(10)), "for bridged networks"),
            (
                with(&|r| {
                    r.mode = NetworkMode::Bridged;
                    r.uplink = Some("eth0".into());
                    r.vlan = Some(4095);
                }),
                "outside 1-4094",
            ),
            (
                with(&|r| {
                    r.mode = NetworkMode::Bridged;
                    r.vlan = Some(0);
                    r.uplink = Some("eth0".into());
                }),
                "outside 1-4094",
            ),
            (with(&|r| r.mode = NetworkMode::Bridged), "needs --uplink"),
            (
                with(&|r| {
                    r.mode = NetworkMode::Bridged;
                    r.uplink = Some("averylonguplink".into());
                    r.vlan = Some(100);
                }),
                "not a valid interface name",
            ),
        ];
        for (request, expected) in cases {
            match plan(&request) {
                Err(Invalid(message)) => {
                    assert!(message.contains(expected), "{request:?}: {message}")
                }
                Ok(plan) => panic!("{request:?} was accepted as {plan:?}"),
            }
        }
    }

    #[test]
    fn overlaps_and_free_addresses() {
        let subnet: Ipv4Net = "10.10.0.0/24".parse().expect("cidr");
        let others = [("a", "10.20.0.0/24"), ("b", "10.10.0.128/25")];
        assert_eq!(
            overlapping(&subnet, others).map(|(name, _)| name),
            Some("b")
        );
        let wider = [("c", "10.0.0.0/8")];
        assert_eq!(overlapping(&subnet, wider).map(|(name, _)| name), Some("c"));
        assert!(overlapping(&subnet, [("d", "10.11.0.0/16")]).is_none());

        let start = Ipv4Addr::new(10, 10, 0, 2);
        let end = Ipv4Addr::new(10, 10, 0, 4);
        let mut taken = HashSet::from([start]);
        assert_eq!(
            first_free(start, end, &taken),
            Some(Ipv4Addr::new(10, 10, 0, 3))
        );
        taken.extend([Ipv4Addr::new(10, 10, 0, 3), end]);
        assert_eq!(first_free(start, end, &taken), None);
    }
}
