//! End-to-end tests: `drover server` and `drover agent`s run as separate processes on
//! 127.0.0.1 with real QEMU (the tiny guest, TCG), and everything is driven through the `drover`
//! CLI binary, as a user would. Daemon logs go to `target/test-artifacts/<test>/`.

mod common;

use common::{Cli, Daemon, GuestShell, QemuReaper, alive, as_strs, free_port, qemu_pids};
use drover_testkit::{artifacts_dir, guest, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server and its agents, each a `drover` process with its own data directory.
struct Cluster {
    _temp: tempfile::TempDir,
    artifacts: PathBuf,
    root: PathBuf,
    api_port: u16,
    server: Daemon,
    agents: Vec<(Daemon, u16, PathBuf)>,
    cli: Cli,
    _reaper: QemuReaper,
}

impl Cluster {
    fn server_args(&self) -> Vec<String> {
        server_args(&self.root, self.api_port)
    }

    fn agent_args(dir: &Path, port: u16) -> Vec<String> {
        let port = port.to_string();
        [
            "agent",
            "--data-dir",
            &dir.to_string_lossy(),
            "--control-port",
            &port,
            "--bind-address",
            "127.0.0.1",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts a server and `agent_count` agents, logs the CLI in and adds the agents as hosts
    /// `h1`, `h2`, ...
    async fn start(test: &str, agent_count: usize) -> Cluster {
        let artifacts = artifacts_dir(test);
        let temp = tempfile::tempdir().expect("temp dir");
        let root = temp.path().to_owned();
        let api_port = free_port();
        let server = Daemon::spawn(
            &artifacts,
            "server",
            &as_strs(&server_args(&root, api_port)),
        );
        let mut agents = Vec::new();
        for index in 1..=agent_count {
            let dir = root.join(format!("agent{index}"));
            let port = free_port();
            let daemon = Daemon::spawn(
                &artifacts,
                &format!("agent{index}"),
                &as_strs(&Cluster::agent_args(&dir, port)),
            );
            agents.push((daemon, port, dir));
        }
        let cli = Cli {
            config_home: root.join("config"),
            netns: None,
        };
        let cluster = Cluster {
            _reaper: QemuReaper {
                agent_dirs: agents.iter().map(|(_, _, dir)| dir.clone()).collect(),
            },
            _temp: temp,
            artifacts,
            root,
            api_port,
            server,
            agents,
            cli,
        };
        cluster.cli.login(&cluster.server, &cluster.url()).await;
        for (index, (agent, port, _)) in cluster.agents.iter().enumerate() {
            let address = format!("127.0.0.1:{port}");
            let name = format!("h{}", index + 1);
            cluster.cli.add_host(agent, &address, &name).await;
        }
        cluster
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    fn restart_agent(&mut self, index: usize, incarnation: u32) {
        let (_, port, dir) = &self.agents[index];
        let args = Cluster::agent_args(dir, *port);
        let daemon = Daemon::spawn(
            &self.artifacts,
            &format!("agent{}-{incarnation}", index + 1),
            &as_strs(&args),
        );
        self.agents[index].0 = daemon;
    }

    fn restart_server(&mut self) {
        self.server.stop(Signal::SIGTERM);
        self.server = Daemon::spawn(&self.artifacts, "server-2", &as_strs(&self.server_args()));
    }
}

fn server_args(root: &Path, api_port: u16) -> Vec<String> {
    let port = api_port.to_string();
    [
        "server",
        "--data-dir",
        &root.join("server").to_string_lossy(),
        "--api-port",
        &port,
        "--bind-address",
        "127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn guest_args<'a>(name: &'a str, host: &'a str, memory: &'a str) -> Vec<String> {
    let guest = guest();
    [
        "vm",
        "create",
        name,
        "--host",
        host,
        "--cpus",
        "1",
        "--memory",
        memory,
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
    .to_vec()
}

/// Types a command into the guest's shell through `drover vm console` until its answer shows,
/// then detaches with Ctrl-].
async fn console_round_trip(cli: &Cli, vm: &str) {
    let shell = GuestShell::open(cli, vm).await;
    shell.detach().await;
}

/// The body of `GET /` from 127.0.0.1:`port`, once it has `marker` (the guest's httpd may still
/// be starting: slirp accepts the connection and closes it while nothing listens inside).
async fn http_get_until(port: u16, marker: &str, timeout: Duration) -> String {
    wait_until(
        &format!("'{marker}' from 127.0.0.1:{port}"),
        timeout,
        async || {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut body = String::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body))
                .await
                .ok()?
                .ok()?;
            body.contains(marker).then_some(body)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

fn qemu_pid_of(agent_dir: &Path, vm_id: &str) -> i32 {
    std::fs::read_to_string(agent_dir.join("vms").join(vm_id).join("qemu.pid"))
        .expect("qemu.pid of a running VM")
        .trim()
        .parse()
        .expect("a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_vm_lifecycle_restarts_and_bad_input_through_the_cli() {
    let mut cluster = Cluster::start("e2e_lifecycle", 2).await;
    let cli = cluster.cli.clone();

    let hosts = cli.json(&["host", "list"]).await;
    let hosts = hosts.as_array().expect("a JSON array");
    assert_eq!(hosts.len(), 2);
    for host in hosts {
        assert_eq!(host["state"], "responding", "{host}");
        assert_eq!(host["accelerator"], "tcg", "{host}");
    }

    cli.ok(&as_strs(&guest_args("demo", "h2", "256M"))).await;
    let vm = cli.json(&["vm", "show", "demo"]).await;
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["host_name"], "h2");
    let vm_id = vm["id"].as_str().expect("vm id").to_owned();
    let host_show = cli.ok(&["host", "show", "h2"]).await;
    assert!(host_show.contains("demo"), "{host_show}");

    console_round_trip(&cli, "demo").await;

    // ACPI power button: the guest powers itself off.
    cli.ok(&["vm", "shutdown", "demo"]).await;
    cli.wait_vm_state("demo", "stopped", Duration::from_secs(30))
        .await;
    // A port forward added to the stopped VM applies when it starts; one added to the running
    // VM applies at once. Both reach the guest's httpd on the default user-mode NIC.
    let (stopped_port, running_port) = (free_port(), free_port());
    cli.ok(&["vm", "port-forward", "demo", &format!("{stopped_port}:80")])
        .await;
    cli.ok(&["vm", "start", "demo"]).await;
    cli.wait_vm_state("demo", "running", Duration::from_secs(10))
        .await;
    let hello = "tinyvm says hello";
    http_get_until(stopped_port, hello, Duration::from_secs(60)).await;
    cli.ok(&["vm", "port-forward", "demo", &format!("{running_port}:80")])
        .await;
    http_get_until(running_port, hello, Duration::from_secs(10)).await;
    cli.fails(
        &["vm", "port-forward", "demo", &format!("{running_port}:22")],
        "port_forward_conflict",
    )
    .await;
    let vm = cli.json(&["vm", "show", "demo"]).await;
    assert_eq!(
        vm["port_forwards"].as_array().map(Vec::len),
        Some(2),
        "{vm}"
    );
    assert_eq!(vm["nics"][0]["network"], "user", "{vm}");
    assert!(
        vm["nics"][0]["mac"]
            .as_str()
            .is_some_and(|mac| mac.starts_with("52:54:00:d0:")),
        "{vm}"
    );
    let agent2_dir = cluster.agents[1].2.clone();
    let qemu_pid = qemu_pid_of(&agent2_dir, &vm_id);

    // An agent killed outright: the host stops responding, the VM is Unknown, QEMU lives on.
    cluster.agents[1].0.stop(Signal::SIGKILL);
    cli.wait_host_state("h2", "not_responding", Duration::from_secs(15))
        .await;
    cli.wait_vm_state("demo", "unknown", Duration::from_secs(5))
        .await;
    assert!(alive(qemu_pid), "QEMU must outlive its agent");

    // The restarted agent re-adopts the same QEMU process.
    cluster.restart_agent(1, 2);
    cli.wait_host_state("h2", "responding", Duration::from_secs(30))
        .await;
    cli.wait_vm_state("demo", "running", Duration::from_secs(10))
        .await;
    assert_eq!(qemu_pid_of(&agent2_dir, &vm_id), qemu_pid);
    http_get_until(running_port, hello, Duration::from_secs(10)).await;

    // A restarted server finds its hosts and VMs as they are.
    cluster.restart_server();
    cluster.server.printed("drover server listening on").await;
    cli.wait_host_state("h1", "responding", Duration::from_secs(30))
        .await;
    cli.wait_host_state("h2", "responding", Duration::from_secs(30))
        .await;
    cli.wait_vm_state("demo", "running", Duration::from_secs(10))
        .await;
    assert!(alive(qemu_pid));

    // Bad input: a clear error, exit 1, nothing created.
    cli.fails(
        &[
            "vm",
            "create",
            "bad name!",
            "--host",
            "h1",
            "--disk",
            "none",
        ],
        "invalid_name",
    )
    .await;
    cli.fails(
        &["vm", "create", "x1", "--host", "nohost", "--disk", "none"],
        "host_not_found",
    )
    .await;
    cli.fails(
        &[
            "vm", "create", "x2", "--host", "h1", "--memory", "4T", "--disk", "none",
        ],
        "insufficient_host_resources",
    )
    .await;
    let missing = cluster.root.join("no-such-vmlinux");
    let outcome = cli
        .run(&[
            "vm",
            "create",
            "x3",
            "--host",
            "h1",
            "--disk",
            "none",
            "--kernel",
            &missing.to_string_lossy(),
        ])
        .await;
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("no-such-vmlinux"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("action: "), "{}", outcome.stderr);
    cli.fails(&["vm", "pause", "nope"], "vm_not_found").await;
    let names: Vec<String> = cli
        .json(&["vm", "list"])
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|vm| vm["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, vec!["demo".to_owned()]);

    // An expired token.
    let short_lived = Cli {
        config_home: cluster.root.join("config-short"),
        netns: None,
    };
    let password = cluster.server.printed("admin password:").await;
    assert!(
        password.starts_with("shown at the first start"),
        "{password}"
    );
    let ca = cli.config_home.join("drover/ca.pem");
    let first_password = std::fs::read_to_string(cluster.artifacts.join("server.out"))
        .expect("first server output")
        .lines()
        .find_map(|line| line.strip_prefix("admin password: "))
        .expect("password line")
        .to_owned();
    short_lived
        .ok(&[
            "login",
            &cluster.url(),
            "--password",
            &first_password,
            "--ca",
            &ca.to_string_lossy(),
            "--ttl",
            "1",
        ])
        .await;
    wait_until("the token to expire", Duration::from_secs(10), async || {
        let outcome = short_lived.run(&["host", "list"]).await;
        (outcome.code == 1 && outcome.stderr.contains("code: token_expired")).then_some(())
    })
    .await
    .expect("an expired token is refused with token_expired");

    // Delete: the VM and its QEMU process are gone.
    cli.ok(&["vm", "delete", "demo"]).await;
    assert!(
        cli.json(&["vm", "list"])
            .await
            .as_array()
            .expect("array")
            .is_empty()
    );
    wait_until("QEMU to end", Duration::from_secs(10), async || {
        (!alive(qemu_pid)).then_some(())
    })
    .await
    .expect("QEMU ends when its VM is deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_creates_and_starts_on_one_host_all_succeed() {
    let cluster = Cluster::start("e2e_concurrent_creates", 1).await;
    let cli = cluster.cli.clone();
    let names: Vec<String> = (0..10).map(|index| format!("c{index}")).collect();

    let creates = names.iter().map(|name| {
        let cli = cli.clone();
        let mut args = guest_args(name, "h1", "128M");
        args.push("--async".to_owned());
        async move { cli.ok(&as_strs(&args)).await.trim().to_owned() }
    });
    let jobs = futures_util::future::join_all(creates).await;
    let watches = jobs.iter().map(|job| {
        let cli = cli.clone();
        async move { cli.json(&["job", "watch", job]).await }
    });
    for finished in futures_util::future::join_all(watches).await {
        assert_eq!(finished["status"], "completed", "{finished}");
    }
    let vms = cli.json(&["vm", "list", "--host", "h1"]).await;
    let vms = vms.as_array().expect("array");
    assert_eq!(vms.len(), 10);
    assert!(vms.iter().all(|vm| vm["state"] == "running"), "{vms:?}");

    let deletes = names.iter().map(|name| {
        let cli = cli.clone();
        async move { cli.ok(&["vm", "delete", name]).await }
    });
    futures_util::future::join_all(deletes).await;
    assert!(
        cli.json(&["vm", "list"])
            .await
            .as_array()
            .expect("array")
            .is_empty()
    );
    assert!(
        qemu_pids(&cluster.agents[0].2).is_empty(),
        "every VM directory is gone"
    );
}

#[tokio::test]
async fn ports_show_each_value_and_where_it_was_set() {
    let temp = tempfile::tempdir().expect("temp dir");
    let cli = Cli {
        config_home: temp.path().to_owned(),
        netns: None,
    };
    let outcome = cli
        .run_with_env(
            &["ports", "--api-port", "18100", "-o", "json"],
            &[("DROVER_AGENT_CONTROL_PORT", "18101")],
        )
        .await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let rows: Value = serde_json::from_str(&outcome.stdout).expect("JSON");
    let row = |key: &str| {
        rows.as_array()
            .expect("array")
            .iter()
            .find(|row| row["config_key"] == key)
            .cloned()
            .expect("row for the key")
    };
    assert_eq!(row("server.api_port")["port"], "18100");
    assert_eq!(row("server.api_port")["source"], "flag --api-port");
    assert_eq!(row("agent.control_port")["port"], "18101");
    assert_eq!(
        row("agent.control_port")["source"],
        "env DROVER_AGENT_CONTROL_PORT"
    );
    assert_eq!(row("agent.transfer_port")["source"], "default");
    let table = cli.run(&["ports"]).await;
    assert!(table.stdout.contains("CONFIG KEY"), "{}", table.stdout);
}
