//! Virtual networks end to end, inside network namespaces this test makes and removes: a
//! "switch" namespace (the management bridge, a LAN bridge with its own DHCP server, the Drover
//! server and the CLI) and two "host" namespaces, each running an agent and joined to the switch
//! by veth pairs (eth0 management, eth1 the LAN uplink). Tiny guests on both hosts get their
//! addresses by DHCP and reach each other on a bridged network and on a VXLAN overlay; a nat
//! guest reaches HTTP servers on its host and beyond; an isolated guest cannot. Nothing on the
//! machine's own network changes: every bridge, tunnel, rule and dnsmasq lives in the namespaces.

mod common;

use common::{Cli, Daemon, GuestShell, as_strs, free_port};
use drover_testkit::{artifacts_dir, guest, wait_for_text, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The management network between the switch and the hosts, private to the namespaces.
const SWITCH_ADDRESS: &str = "10.231.0.1";
const LAN_ADDRESS: &str = "10.232.0.1";
const HTTP_PORT: u16 = 8080;

/// Runs a shell command in a namespace; panics with its output when it fails.
fn sh(netns: &str, script: &str) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-ec", script])
        .output()
        .expect("run ip netns exec");
    assert!(
        output.status.success(),
        "`{script}` in {netns} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The test's namespaces. Dropping it (also when the test fails) kills every process left in
/// them (agents' QEMUs and dnsmasqs included) and deletes them, which removes their bridges,
/// tunnels and rules with them.
struct Topology {
    switch: String,
    hosts: Vec<String>,
}

impl Topology {
    fn new(dir: &Path) -> Topology {
        let prefix = format!("drvnet{}", std::process::id());
        let topology = Topology {
            switch: format!("{prefix}sw"),
            hosts: vec![format!("{prefix}h1"), format!("{prefix}h2")],
        };
        for netns in topology.all() {
            let status = Command::new("ip")
                .args(["netns", "add", netns])
                .status()
                .expect("ip netns add");
            assert!(status.success(), "cannot make namespace {netns}");
            sh(netns, "ip link set lo up");
        }
        let switch = &topology.switch;
        sh(
            switch,
            &format!(
                "ip link add br0 type bridge && ip addr add {SWITCH_ADDRESS}/24 dev br0 && ip link set br0 up
                 ip link add lan0 type bridge && ip addr add {LAN_ADDRESS}/24 dev lan0 && ip link set lan0 up"
            ),
        );
        for (index, host) in topology.hosts.iter().enumerate() {
            let number = index + 1;
            sh(
                switch,
                &format!(
                    "ip link add h{number}m type veth peer name eth0 netns {host}
                     ip link add h{number}l type veth peer name eth1 netns {host}
                     ip link set h{number}m master br0 up && ip link set h{number}l master lan0 up"
                ),
            );
            sh(
                host,
                &format!(
                    "ip addr add 10.231.0.1{number}/24 dev eth0 && ip link set eth0 up && ip link set eth1 up"
                ),
            );
        }
        // The LAN's own DHCP server, as a physical segment has one; no router, so a guest's
        // default route stays on its nat NIC.
        let leases = dir.join("lan.leases");
        let pid_file = dir.join("lan-dnsmasq.pid");
        sh(
            switch,
            &format!(
                "dnsmasq --conf-file=/dev/null --port=0 --interface=lan0 --bind-interfaces --user=root \
                 --dhcp-range=10.232.0.50,10.232.0.99,255.255.255.0,1h --dhcp-option=option:router \
                 --dhcp-leasefile={} --pid-file={}",
                leases.display(),
                pid_file.display()
            ),
        );
        topology
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.switch).chain(&self.hosts)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for netns in self.all() {
            if let Ok(output) = Command::new("ip").args(["netns", "pids", netns]).output() {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

/// Serves `body` over HTTP on port [`HTTP_PORT`] of every address of namespace `netns`, from a
/// thread that entered the namespace (its socket stays there).
fn serve_http_in(netns: &str, body: &'static str) {
    let namespace = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("namespace file");
    let (ready, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("enter namespace");
        let listener = std::net::TcpListener::bind(("0.0.0.0", HTTP_PORT)).expect("bind");
        ready.send(()).expect("test waits");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    listening.recv().expect("the server listens");
}

/// The address the LAN's DHCP server leased to `mac`.
async fn lan_lease(leases: &Path, mac: &str) -> String {
    wait_until(
        &format!("a LAN lease for {mac}"),
        Duration::from_secs(60),
        async || {
            let text = std::fs::read_to_string(leases).ok()?;
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(1) == Some(&mac)).then(|| fields[2].to_owned())
            })
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

fn nic(vm: &Value, index: usize) -> &Value {
    &vm["nics"][index]
}

/// Waits until the guest holds its reserved address on NIC `index` (from its host's lease).
async fn leased(cli: &Cli, vm: &str, index: usize) -> String {
    wait_until(
        &format!("{vm} nic{index} to hold its lease"),
        Duration::from_secs(60),
        async || {
            let shown = cli.json(&["vm", "show", vm]).await;
            let nic = nic(&shown, index);
            let ip = nic["ip"].as_str()?;
            (nic["lease_ip"].as_str() == Some(ip)).then(|| ip.to_owned())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

fn guest_create(name: &str, host: &str, networks: &[&str]) -> Vec<String> {
    let guest = guest();
    let mut args: Vec<String> = [
        "vm",
        "create",
        name,
        "--host",
        host,
        "--cpus",
        "1",
        "--memory",
        "160M",
        "--disk",
        "none",
        "--kernel",
        &guest.kernel.to_string_lossy(),
        "--initrd",
        &guest.initrd.to_string_lossy(),
        "--cmdline",
        "console=ttyS0 quiet tiny.shell=1",
        "--start",
    ]
    .map(str::to_owned)
    .to_vec();
    for network in networks {
        args.extend(["--network".to_owned(), (*network).to_owned()]);
    }
    args
}

/// Brings up a NIC the guest's init left down and asks the network's DHCP server for its lease.
const DHCP: &str = "ip link set {nic} up && udhcpc -i {nic} -q -n -t 8 -T 1 -s /etc/udhcpc.script";

fn dhcp(nic: &str) -> String {
    DHCP.replace("{nic}", nic)
}

/// The test's namespaces with a Drover server in the switch and an agent in each host
/// namespace (h1 also a library server), the CLI logged in. Hosts are added by the test, so that
/// one can join after a network was made.
struct Lab {
    artifacts: PathBuf,
    root: PathBuf,
    _server: Daemon,
    agents: Vec<Daemon>,
    cli: Cli,
    // Dropped after the daemons: it kills what is left in the namespaces and removes them.
    topology: Topology,
    _temp: tempfile::TempDir,
}

impl Lab {
    async fn start(test: &str) -> Lab {
        let artifacts = artifacts_dir(test);
        let temp = tempfile::tempdir().expect("temp dir");
        let root = temp.path().to_owned();
        let topology = Topology::new(&root);
        let api_port = free_port();
        let server = Daemon::spawn_in(
            Some(&topology.switch),
            &artifacts,
            "server",
            &as_strs(&[
                "server".to_owned(),
                "--data-dir".to_owned(),
                root.join("server").display().to_string(),
                "--api-port".to_owned(),
                api_port.to_string(),
                "--bind-address".to_owned(),
                "127.0.0.1".to_owned(),
            ]),
            &[],
        );
        let agents = (0..topology.hosts.len())
            .map(|index| {
                Daemon::spawn_in(
                    Some(&topology.hosts[index]),
                    &artifacts,
                    &format!("agent{}", index + 1),
                    &as_strs(&agent_args(&root, index)),
                    &[],
                )
            })
            .collect();
        let cli = Cli {
            config_home: root.join("config"),
            netns: Some(topology.switch.clone()),
        };
        cli.login(&server, &format!("https://127.0.0.1:{api_port}"))
            .await;
        Lab {
            artifacts,
            root,
            _server: server,
            agents,
            cli,
            topology,
            _temp: temp,
        }
    }

    /// Adds the agent of host namespace `index` as host `h<index + 1>`.
    async fn add_host(&self, index: usize) {
        let number = index + 1;
        self.cli
            .add_host(
                &self.agents[index],
                &format!("10.231.0.1{number}:8101"),
                &format!("h{number}"),
            )
            .await;
    }

    /// Kills the agent of host namespace `index` and starts it again on the same data.
    async fn restart_agent(&mut self, index: usize, log_name: &str) {
        self.agents[index].stop(Signal::SIGKILL);
        self.agents[index] = Daemon::spawn_in(
            Some(&self.topology.hosts[index]),
            &self.artifacts,
            log_name,
            &as_strs(&agent_args(&self.root, index)),
            &[],
        );
        self.cli
            .wait_host_state(
                &format!("h{}", index + 1),
                "responding",
                Duration::from_secs(30),
            )
            .await;
    }
}

fn agent_args(root: &Path, index: usize) -> Vec<String> {
    vec![
        "agent".to_owned(),
        "--data-dir".to_owned(),
        agent_dir(root, index).display().to_string(),
        "--control-port".to_owned(),
        "8101".to_owned(),
        "--roles".to_owned(),
        if index == 0 { "host,library" } else { "host" }.to_owned(),
        "--bind-address".to_owned(),
        format!("10.231.0.1{}", index + 1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_isolated_bridged_and_overlay_networks_across_two_hosts_in_namespaces() {
    let mut lab = Lab::start("e2e_networks").await;
    let hosts = lab.topology.hosts.clone();
    serve_http_in(&hosts[0], "drover-host-side");
    serve_http_in(&lab.topology.switch, "drover-beyond-nat");
    for index in 0..2 {
        lab.add_host(index).await;
    }
    let cli = lab.cli.clone();
    let root = lab.root.clone();

    // Networks, realized on both hosts at once.
    for args in [
        &["natnet", "--mode", "nat", "--subnet", "10.240.0.0/24"][..],
        &["isonet", "--mode", "isolated", "--subnet", "10.241.0.0/24"],
        &["lan", "--mode", "bridged", "--uplink", "eth1"],
        &[
            "ovl",
            "--mode",
            "isolated",
            "--subnet",
            "10.242.0.0/24",
            "--overlay",
        ],
        &[
            "novl",
            "--mode",
            "nat",
            "--subnet",
            "10.243.0.0/24",
            "--overlay",
        ],
        &[
            "vlan100", "--mode", "bridged", "--uplink", "eth1", "--vlan", "100",
        ],
        &["far", "--mode", "bridged", "--uplink", "eth9"],
    ] {
        let mut command = vec!["network", "create"];
        command.extend_from_slice(args);
        cli.ok(&command).await;
    }
    let far = cli.json(&["network", "show", "far"]).await;
    for host in far["hosts"].as_array().expect("hosts") {
        assert_eq!(host["state"], "needs_attention", "{far}");
        assert!(
            host["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("eth9 does not exist")),
            "{far}"
        );
    }
    let vlan = cli.json(&["network", "show", "vlan100"]).await;
    let kernel_has_vlans = Path::new("/proc/net/vlan").exists();
    for host in vlan["hosts"].as_array().expect("hosts") {
        if kernel_has_vlans {
            assert_eq!(host["state"], "ready", "{vlan}");
        } else {
            assert_eq!(host["state"], "needs_attention", "{vlan}");
            assert_eq!(
                host["reason"],
                "this host's kernel cannot make the 802.1Q sub-interface eth1.100 (no 8021q support)",
                "{vlan}"
            );
        }
    }
    cli.fails(
        &as_strs(&guest_create("nowhere", "h1", &["far"])),
        "network_needs_attention",
    )
    .await;
    // A network scoped to a host group is realized on that group's hosts only, and VMs on it
    // go nowhere else.
    cli.ok(&["hostgroup", "create", "rack2"]).await;
    cli.ok(&["host", "move", "h2", "--group", "rack2"]).await;
    cli.ok(&[
        "network",
        "create",
        "scoped",
        "--mode",
        "isolated",
        "--subnet",
        "10.244.0.0/24",
        "--group",
        "rack2",
    ])
    .await;
    let scoped = cli.json(&["network", "show", "scoped"]).await;
    assert_eq!(scoped["group"], "rack2", "{scoped}");
    let carriers: Vec<&str> = scoped["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|host| host["host_name"].as_str())
        .collect();
    assert_eq!(carriers, ["h2"], "{scoped}");
    assert!(
        sh(&hosts[0], "ip -o link show")
            .lines()
            .all(|line| !line.contains("dr-scoped")),
        "h1 is outside the group"
    );
    cli.fails(
        &as_strs(&guest_create("outsider", "h1", &["scoped"])),
        "network_not_in_group",
    )
    .await;
    cli.ok(&["network", "delete", "scoped"]).await;

    // Placement knows it: every host rates 0 for a VM on `far`, with the host's reason, and a
    // create left to placement finds no host.
    let rated = cli
        .json(&["placement", "rate", "--network", "far", "--memory", "160M"])
        .await;
    for rating in rated["ratings"].as_array().expect("ratings") {
        assert_eq!(rating["rating"], 0.0, "{rated}");
        assert!(
            rating["reasons"][0]
                .as_str()
                .is_some_and(|reason| reason.contains("network far: needs attention")
                    && reason.contains("eth9 does not exist")),
            "{rated}"
        );
    }
    let mut placed = guest_create("nowhere", "h1", &["far"]);
    let host_flag = placed
        .iter()
        .position(|arg| arg == "--host")
        .expect("--host");
    placed.drain(host_flag..host_flag + 2);
    cli.fails(&as_strs(&placed), "no_suitable_host").await;
    let natnet = cli.json(&["network", "show", "natnet"]).await;
    assert_eq!(
        natnet["hosts"].as_array().map(Vec::len),
        Some(2),
        "{natnet}"
    );
    sh(
        &hosts[0],
        "ip link show dr-natnet && nft list table ip drover-dr-natnet >/dev/null",
    );

    cli.ok(&as_strs(&guest_create(
        "a",
        "h1",
        &["natnet", "lan", "ovl"],
    )))
    .await;
    cli.ok(&as_strs(&guest_create("b", "h2", &["lan", "ovl"])))
        .await;
    cli.ok(&as_strs(&guest_create("iso", "h1", &["isonet"])))
        .await;

    // nat: the guest's boot-time DHCP got the reserved address; it reaches the HTTP server on
    // its host (through the gateway) and the one beyond the host (masqueraded).
    let a_nat = leased(&cli, "a", 0).await;
    assert_eq!(a_nat, "10.240.0.2");
    let mut a = GuestShell::open(&cli, "a").await;
    // busybox's wget crashes in this guest (static glibc); nc speaks HTTP/1.0 just as well.
    let http_get = |address: &str, body: &str| {
        format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {address} {HTTP_PORT} | grep -q {body}"
        )
    };
    assert!(
        a.succeeds(
            &http_get("10.240.0.1", "drover-host-side"),
            Duration::from_secs(30)
        )
        .await,
        "{}",
        a.output()
    );
    assert!(
        a.succeeds(
            &http_get("10.231.0.1", "drover-beyond-nat"),
            Duration::from_secs(30)
        )
        .await,
        "{}",
        a.output()
    );

    // isolated: DHCP works, the way out does not.
    leased(&cli, "iso", 0).await;
    let mut iso = GuestShell::open(&cli, "iso").await;
    assert!(
        !iso.succeeds(
            &http_get("10.241.0.1", "drover-host-side"),
            Duration::from_secs(30)
        )
        .await,
        "{}",
        iso.output()
    );
    assert!(
        !iso.succeeds(
            &http_get("10.231.0.1", "drover-beyond-nat"),
            Duration::from_secs(30)
        )
        .await,
        "{}",
        iso.output()
    );
    iso.detach().await;

    // bridged: both guests lease from the LAN's own DHCP server and reach each other across
    // the two hosts.
    let b_shown = cli.json(&["vm", "show", "b"]).await;
    let lan_leases = root.join("lan.leases");
    let b_lan = lan_lease(&lan_leases, nic(&b_shown, 0)["mac"].as_str().expect("mac")).await;
    assert!(
        a.succeeds(&dhcp("eth1"), Duration::from_secs(30)).await,
        "{}",
        a.output()
    );
    let a_shown = cli.json(&["vm", "show", "a"]).await;
    lan_lease(&lan_leases, nic(&a_shown, 1)["mac"].as_str().expect("mac")).await;
    assert!(
        a.succeeds(&reach(&b_lan), Duration::from_secs(30)).await,
        "{}",
        a.output()
    );

    // overlay: an isolated network carried over VXLAN between the hosts; each host's DHCP
    // server answers only its own guests.
    let mut b = GuestShell::open(&cli, "b").await;
    assert!(
        b.succeeds(&dhcp("eth1"), Duration::from_secs(30)).await,
        "{}",
        b.output()
    );
    assert!(
        a.succeeds(&dhcp("eth2"), Duration::from_secs(30)).await,
        "{}",
        a.output()
    );
    let b_overlay = leased(&cli, "b", 1).await;
    assert_eq!(leased(&cli, "a", 2).await, "10.242.0.2");
    let overlay_state = |hosts: &[String]| {
        hosts
            .iter()
            .map(|host| {
                sh(host, "bridge fdb show dev dv10000; ip -d -s link show dv10000; nft list ruleset; ip -s link show dr-ovl")
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    if !a
        .succeeds(&reach(&b_overlay), Duration::from_secs(30))
        .await
    {
        panic!("{}\n{}\n{}", a.output(), b.output(), overlay_state(&hosts));
    }

    // NIC hot-plug: a NIC on the nat network comes to the running guest on host 2, gets its
    // reserved address by DHCP, and goes again.
    cli.ok(&["vm", "nic", "add", "b", "--network", "natnet"])
        .await;
    let eth2_appears = "n=0; while [ ! -e /sys/class/net/eth2 ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n+1)); done; test -e /sys/class/net/eth2";
    assert!(
        b.succeeds(eth2_appears, Duration::from_secs(40)).await,
        "{}",
        b.output()
    );
    assert!(
        b.succeeds(&dhcp("eth2"), Duration::from_secs(30)).await,
        "{}",
        b.output()
    );
    assert_eq!(leased(&cli, "b", 2).await, "10.240.0.3");
    cli.ok(&["vm", "nic", "remove", "b", "--network", "natnet"])
        .await;
    assert!(
        b.succeeds("! test -e /sys/class/net/eth2", Duration::from_secs(10))
            .await,
        "{}",
        b.output()
    );
    let b_shown = cli.json(&["vm", "show", "b"]).await;
    assert_eq!(
        b_shown["nics"].as_array().map(Vec::len),
        Some(2),
        "{b_shown}"
    );

    // A nat overlay: its guest-facing links and DHCP offer leave room for the VXLAN header
    // (MTU 1450). Guests that apply the offered MTU (as a DHCP client with option 26 does) move
    // full-sized frames between the hosts: a 1400-byte ping and a 300 kB TCP stream through
    // the echo service.
    for host in &hosts {
        sh(
            host,
            "ip link show dr-novl | grep -q 'mtu 1450' && ip link show dv10001 | grep -q 'mtu 1450'",
        );
    }
    cli.ok(&["vm", "nic", "add", "a", "--network", "novl"])
        .await;
    cli.ok(&["vm", "nic", "add", "b", "--network", "novl"])
        .await;
    let dhcp_with_mtu = |nic: &str| {
        format!(
            "{{ echo '#!/bin/sh'; echo '/etc/udhcpc.script \"$@\"'; \
             echo '[ -z \"$mtu\" ] || ip link set \"$interface\" mtu \"$mtu\"'; }} > /tmp/mtu.script \
             && chmod +x /tmp/mtu.script && n=0; while [ ! -e /sys/class/net/{nic} ] && [ $n -lt 100 ]; \
             do sleep 0.2; n=$((n+1)); done; ip link set {nic} up \
             && udhcpc -i {nic} -q -n -t 8 -T 1 -s /tmp/mtu.script && test \"$(cat /sys/class/net/{nic}/mtu)\" = 1450"
        )
    };
    assert!(
        a.succeeds(&dhcp_with_mtu("eth3"), Duration::from_secs(60))
            .await,
        "{}",
        a.output()
    );
    assert!(
        b.succeeds(&dhcp_with_mtu("eth2"), Duration::from_secs(60))
            .await,
        "{}",
        b.output()
    );
    let b_novl = leased(&cli, "b", 2).await;
    let large = format!(
        "ping -c 1 -W 5 -s 1400 {b_novl} >/dev/null && \
         test \"$(head -c 300000 /dev/zero | nc -w 5 {b_novl} 7 | wc -c)\" = 300000"
    );
    if !a.succeeds(&large, Duration::from_secs(60)).await {
        panic!("{}\n{}\n{}", a.output(), b.output(), overlay_state(&hosts));
    }
    for vm in ["a", "b"] {
        cli.ok(&["vm", "nic", "remove", vm, "--network", "novl"])
            .await;
    }

    // VLAN 100 on the LAN: tagged frames between the hosts' eth1.100 sub-interfaces through
    // the switch. Only a kernel with 802.1Q can carry them (checked above); this one may not.
    if kernel_has_vlans {
        let mut shells = [&mut a, &mut b];
        for (index, vm) in ["a", "b"].into_iter().enumerate() {
            cli.ok(&["vm", "nic", "add", vm, "--network", "vlan100"])
                .await;
            let shown = cli.json(&["vm", "show", vm]).await;
            let nics = shown["nics"].as_array().expect("nics");
            let mac = nics.last().expect("the new NIC")["mac"]
                .as_str()
                .expect("mac")
                .to_lowercase();
            let find = format!("grep -l {mac} /sys/class/net/*/address");
            let up = format!(
                "n=0; while ! {find} >/dev/null 2>&1 && [ $n -lt 100 ]; do sleep 0.2; n=$((n+1)); done; \
                 nic=$({find} | cut -d/ -f5) && ip link set $nic up && ip addr add 10.234.0.1{index}/24 dev $nic"
            );
            let shell = &mut shells[index];
            assert!(
                shell.succeeds(&up, Duration::from_secs(60)).await,
                "{}",
                shell.output()
            );
        }
        assert!(
            a.succeeds(&reach("10.234.0.11"), Duration::from_secs(30))
                .await,
            "{}",
            a.output()
        );
        for vm in ["a", "b"] {
            cli.ok(&["vm", "nic", "remove", vm, "--network", "vlan100"])
                .await;
        }
    }

    // An agent restart re-adopts its bridges and DHCP servers: same dnsmasq, traffic goes on.
    let dnsmasq_pid = |index: usize, bridge: &str| {
        std::fs::read_to_string(
            agent_dir(&root, index)
                .join("networks")
                .join(bridge)
                .join("dnsmasq.pid"),
        )
        .expect("dnsmasq pid file")
    };
    let before = dnsmasq_pid(0, "dr-ovl");
    lab.restart_agent(0, "agent1-2").await;
    assert_eq!(
        dnsmasq_pid(0, "dr-ovl"),
        before,
        "the agent restart must not restart dnsmasq"
    );
    // The console relay went with the old agent; the guest did not.
    drop(a);
    let mut a = GuestShell::open(&cli, "a").await;
    assert!(
        a.succeeds(&reach(&b_overlay), Duration::from_secs(30))
            .await,
        "{}",
        a.output()
    );
    assert!(
        a.succeeds(
            &http_get("10.231.0.1", "drover-beyond-nat"),
            Duration::from_secs(30)
        )
        .await,
        "{}",
        a.output()
    );
    a.detach().await;
    b.detach().await;

    // A network in use cannot go; once its VMs are gone it goes from every host.
    cli.fails(&["network", "delete", "natnet"], "network_in_use")
        .await;
    for vm in ["a", "b", "iso"] {
        cli.ok(&["vm", "delete", vm]).await;
    }
    for network in ["natnet", "isonet", "lan", "ovl", "novl", "vlan100", "far"] {
        cli.ok(&["network", "delete", network]).await;
    }
    for host in &hosts {
        let links = sh(host, "ip -o link show");
        assert!(!links.contains("dr-") && !links.contains(" dt"), "{links}");
        let tables = sh(host, "nft list tables");
        assert!(!tables.contains("drover-"), "{tables}");
    }
}

/// Pings `ip` and sends a line through its TCP echo service (port 7), from a guest's shell.
fn reach(ip: &str) -> String {
    format!(
        "ping -c 1 -W 3 {ip} >/dev/null && echo drover-$((6*7)) | nc -w 3 {ip} 7 | grep -q drover-42"
    )
}

/// The line the tiny guest printed on its serial console on host namespace `index` that starts
/// with `marker`, once it is there.
async fn serial_line(root: &Path, index: usize, vm_id: &str, marker: &str) -> String {
    let serial = agent_dir(root, index)
        .join("vms")
        .join(vm_id)
        .join("serial.log");
    let text = wait_for_text(&serial, marker, Duration::from_secs(90))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    text.lines()
        .find_map(|line| line.trim().strip_prefix(marker))
        .expect("the marker line")
        .trim()
        .to_owned()
}

/// The hosts a network is realized on, by name, with their state.
async fn carriers_of(cli: &Cli, network: &str) -> Vec<(String, String)> {
    let shown = cli.json(&["network", "show", network]).await;
    shown["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|host| {
            (
                host["host_name"].as_str().unwrap_or_default().to_owned(),
                host["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Issue 6 item 4 with issue 5(f): a VM from a template (a library base image and a guest OS
/// profile, so a cloud-init seed) on an overlay network that h2 has not realized yet moves live
/// to h2, which joined after the network was made: h2 fetches the base, realizes the network on
/// demand and tells h1 of its new VXLAN peer; the VM keeps MAC, IP (h2's DHCP server now hands
/// it out) and host name, and a guest on h1 still reaches it across the overlay. Stopped, it
/// moves back by quick migration and boots on h1 with the same addresses and name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_vm_on_an_overlay_moves_live_and_quick_with_its_addresses() {
    let lab = Lab::start("e2e_network_migration").await;
    let cli = lab.cli.clone();
    let root = lab.root.clone();
    lab.add_host(0).await;
    cli.ok(&[
        "network",
        "create",
        "ovl",
        "--mode",
        "isolated",
        "--subnet",
        "10.245.0.0/24",
        "--overlay",
    ])
    .await;
    cli.add_main_share(&root.join("library")).await;
    cli.tiny_template("mover-**", &["--nic", "ovl"]).await;
    cli.ok(&[
        "vm",
        "create",
        "mover",
        "--template",
        "t1",
        "--host",
        "h1",
        "--start",
    ])
    .await;
    cli.ok(&as_strs(&guest_create("peer", "h1", &["ovl"])))
        .await;
    lab.add_host(1).await;
    assert_eq!(
        carriers_of(&cli, "ovl").await,
        [("h1".to_owned(), "ready".to_owned())]
    );
    assert!(
        !sh(&lab.topology.hosts[1], "ip -o link show").contains("dr-ovl"),
        "h2 joined after the network was made"
    );

    let before = cli.json(&["vm", "show", "mover"]).await;
    let vm_id = before["id"].as_str().expect("id").to_owned();
    let mac = nic(&before, 0)["mac"].as_str().expect("mac").to_owned();
    let ip = leased(&cli, "mover", 0).await;
    let hostname = serial_line(&root, 0, &vm_id, "TINYVM-HOSTNAME ").await;
    assert!(hostname.starts_with("mover-"), "{hostname}");
    let mut peer = GuestShell::open(&cli, "peer").await;
    assert!(
        peer.succeeds(&reach(&ip), Duration::from_secs(60)).await,
        "{}",
        peer.output()
    );

    // Live, to the host that has neither the base image nor the network.
    let moved = cli.json(&["vm", "migrate", "mover", "--to", "h2"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    let after = cli.json(&["vm", "show", "mover"]).await;
    assert_eq!(after["host_name"], "h2", "{after}");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(nic(&after, 0)["mac"], mac.as_str(), "{after}");
    assert_eq!(nic(&after, 0)["ip"], ip.as_str(), "{after}");
    let mut carriers = carriers_of(&cli, "ovl").await;
    carriers.sort();
    assert_eq!(
        carriers,
        [
            ("h1".to_owned(), "ready".to_owned()),
            ("h2".to_owned(), "ready".to_owned())
        ]
    );
    let item = cli.json(&["library", "show", "tiny-root"]).await;
    let sha256 = item["sha256"].as_str().expect("sha256");
    assert!(
        agent_dir(&root, 1)
            .join("images")
            .join(format!("{sha256}.qcow2"))
            .exists(),
        "h2 fetched the template's base into its cache"
    );
    let vni = cli.json(&["network", "show", "ovl"]).await["vni"]
        .as_u64()
        .expect("an overlay's VNI");
    assert!(
        sh(
            &lab.topology.hosts[0],
            &format!("bridge fdb show dev dv{vni}")
        )
        .contains("00:00:00:00:00:00 dst 10.231.0.12"),
        "h1 sends the overlay's floods to its new peer h2"
    );
    // The guest on h1 reaches the moved one on h2 through the tunnel.
    assert!(
        peer.succeeds(&reach(&ip), Duration::from_secs(60)).await,
        "{}",
        peer.output()
    );
    // Same name; asked again, h2's DHCP server hands out the same address.
    let mut mover = GuestShell::open(&cli, "mover").await;
    assert!(
        mover
            .succeeds(
                &format!("test \"$(hostname)\" = {hostname} && {}", dhcp("eth0")),
                Duration::from_secs(60)
            )
            .await,
        "{}",
        mover.output()
    );
    assert!(
        mover
            .succeeds(
                &format!("ip -4 addr show eth0 | grep -q 'inet {ip}/'"),
                Duration::from_secs(10)
            )
            .await,
        "{}",
        mover.output()
    );
    mover.detach().await;
    assert_eq!(leased(&cli, "mover", 0).await, ip, "h2's lease");
    assert!(
        !agent_dir(&root, 0).join("vms").join(&vm_id).exists(),
        "nothing of the VM stays on h1"
    );
    let tap = drover_api::network::tap_name(vm_id.parse().expect("a VM id"), "nic0");
    assert!(
        !sh(&lab.topology.hosts[0], "ip -o link show").contains(&tap),
        "the VM's tap went from h1"
    );
    assert!(
        sh(&lab.topology.hosts[1], &format!("ip -o link show {tap}")).contains("master dr-ovl")
    );

    // Stopped, back to h1 by quick migration: it boots there with the same MAC, IP and name.
    cli.ok(&["vm", "stop", "mover"]).await;
    let quick = cli.json(&["vm", "migrate", "mover", "--to", "h1"]).await;
    assert_eq!(quick["status"], "completed", "{quick:#}");
    cli.ok(&["vm", "start", "mover"]).await;
    let back = cli.json(&["vm", "show", "mover"]).await;
    assert_eq!(back["host_name"], "h1", "{back}");
    assert_eq!(nic(&back, 0)["mac"], mac.as_str(), "{back}");
    let ready = serial_line(&root, 0, &vm_id, "TINYVM-READY ip=").await;
    assert!(
        ready.starts_with(&format!("{ip}/")),
        "the boot-time DHCP on h1 gave {ready}"
    );
    assert_eq!(
        serial_line(&root, 0, &vm_id, "TINYVM-HOSTNAME ").await,
        hostname
    );
    assert!(
        peer.succeeds(&reach(&ip), Duration::from_secs(60)).await,
        "{}",
        peer.output()
    );
    peer.detach().await;
    for vm in ["mover", "peer"] {
        cli.ok(&["vm", "delete", vm]).await;
    }
    cli.ok(&["network", "delete", "ovl"]).await;
    for host in &lab.topology.hosts {
        assert!(!sh(host, "ip -o link show").contains("dr-ovl"));
    }
}

/// Issue 6(d): a host moved out of the group a network is scoped to gives the network up
/// (bridge, DHCP server, rules and tunnel go, and the overlay's other host stops sending to it),
/// but not while a VM on the host uses the network: that move is refused, naming the VM, and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_leaving_a_network_scope_gives_the_network_up_unless_vms_use_it() {
    let lab = Lab::start("e2e_network_scope").await;
    let cli = lab.cli.clone();
    let hosts = lab.topology.hosts.clone();
    cli.ok(&["hostgroup", "create", "rack2"]).await;
    for index in 0..2 {
        lab.add_host(index).await;
        cli.ok(&[
            "host",
            "move",
            &format!("h{}", index + 1),
            "--group",
            "rack2",
        ])
        .await;
    }
    cli.ok(&[
        "network",
        "create",
        "sovl",
        "--mode",
        "isolated",
        "--subnet",
        "10.246.0.0/24",
        "--overlay",
        "--group",
        "rack2",
    ])
    .await;
    assert_eq!(carriers_of(&cli, "sovl").await.len(), 2);
    let vni = cli.json(&["network", "show", "sovl"]).await["vni"]
        .as_u64()
        .expect("an overlay's VNI");
    let fdb = format!("bridge fdb show dev dv{vni}");
    // The flood entry: learned entries of h1's MACs may stay until they age out.
    let floods_to_h1 = "00:00:00:00:00:00 dst 10.231.0.11";
    assert!(sh(&hosts[1], &fdb).contains(floods_to_h1));
    let realized = format!(
        "ip link show dr-sovl >/dev/null && ip link show dv{vni} >/dev/null \
         && nft list table ip drover-dr-sovl >/dev/null && kill -0 \"$(cat {}/networks/dr-sovl/dnsmasq.pid)\"",
        agent_dir(&lab.root, 0).display()
    );
    sh(&hosts[0], &realized);

    let mut user = guest_create("user", "h1", &["sovl"]);
    user.retain(|arg| arg != "--start");
    cli.ok(&as_strs(&user)).await;
    let refused = cli
        .run(&["host", "move", "h1", "--group", "All Hosts"])
        .await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("code: network_in_use_on_host")
            && refused.stderr.contains("sovl")
            && refused.stderr.contains("user"),
        "{}",
        refused.stderr
    );
    let h1 = cli.json(&["host", "show", "h1"]).await;
    assert_eq!(h1["group_name"], "rack2", "nothing changed: {h1}");
    sh(&hosts[0], &realized);

    cli.ok(&["vm", "delete", "user"]).await;
    cli.ok(&["host", "move", "h1", "--group", "All Hosts"])
        .await;
    assert_eq!(
        carriers_of(&cli, "sovl").await,
        [("h2".to_owned(), "ready".to_owned())]
    );
    let links = sh(&hosts[0], "ip -o link show");
    assert!(
        !links.contains("dr-sovl") && !links.contains(&format!("dv{vni}")),
        "{links}"
    );
    assert!(!sh(&hosts[0], "nft list tables").contains("drover-dr-sovl"));
    assert!(
        !agent_dir(&lab.root, 0)
            .join("networks")
            .join("dr-sovl")
            .exists(),
        "the DHCP server's files went with it"
    );
    assert!(
        !sh(&hosts[1], &fdb).contains(floods_to_h1),
        "h2 no longer floods the overlay to h1"
    );
    // Out of scope now, so VMs on the network are refused on h1.
    cli.fails(
        &as_strs(&guest_create("outsider", "h1", &["sovl"])),
        "network_not_in_group",
    )
    .await;
}

fn agent_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("agent{}", index + 1))
}
