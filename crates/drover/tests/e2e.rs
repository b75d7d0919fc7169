//! End-to-end tests: `drover server` and `drover agent`s run as separate processes on
//! 127.0.0.1 with real QEMU (the tiny guest, TCG), and everything is driven through the `drover`
//! CLI binary, as a user would. Daemon logs go to `target/test-artifacts/<test>/`.

mod common;

use common::{
    Cli, Daemon, GuestShell, QemuReaper, agent_args, alive, as_strs, free_port, http_get_until,
    qemu_pids,
};
use drover_testkit::{artifacts_dir, dir_names, guest, wait_for_text, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A server and its agents, each a `drover` process with its own data directory.
struct Cluster {
    // Dropped first: the reaper reads the QEMU pid files before the temporary directory goes.
    _reaper: QemuReaper,
    _temp: tempfile::TempDir,
    artifacts: PathBuf,
    root: PathBuf,
    api_port: u16,
    server: Daemon,
    agents: Vec<(Daemon, u16, PathBuf)>,
    cli: Cli,
}

impl Cluster {
    fn server_args(&self) -> Vec<String> {
        server_args(&self.root, self.api_port)
    }

    /// Adds share `main` on host h1, in `ROOT/library`; its directory.
    async fn add_share_on_h1(&self) -> PathBuf {
        let share = self.root.join("library");
        self.cli.add_main_share(&share).await;
        share
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
                &as_strs(&agent_args(&dir, port)),
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
        let args = agent_args(dir, *port);
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
    // UDP: QEMU holds the host's UDP port while the forward lasts (the same number over TCP is
    // another socket); removing a forward is hot, and it stays removed.
    let udp_port = free_port();
    let udp_taken = || std::net::UdpSocket::bind(("127.0.0.1", udp_port)).is_err();
    cli.ok(&[
        "vm",
        "port-forward",
        "demo",
        &format!("{udp_port}:7"),
        "--udp",
    ])
    .await;
    assert!(udp_taken(), "QEMU must hold the forwarded UDP port");
    cli.ok(&[
        "vm",
        "port-forward",
        "remove",
        "demo",
        &udp_port.to_string(),
        "--udp",
    ])
    .await;
    assert!(!udp_taken(), "the removed UDP forward must free its port");
    cli.fails(
        &[
            "vm",
            "port-forward",
            "remove",
            "demo",
            &udp_port.to_string(),
            "--udp",
        ],
        "port_forward_not_found",
    )
    .await;
    cli.ok(&[
        "vm",
        "port-forward",
        "remove",
        "demo",
        &stopped_port.to_string(),
    ])
    .await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", stopped_port)).is_err(),
        "the removed TCP forward must stop listening"
    );
    cli.ok(&["vm", "port-forward", "demo", &format!("{stopped_port}:80")])
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

    // QEMU itself refuses to start (the kernel file is not a kernel): the create job fails and
    // takes back everything it made: the VM's row, its directory on the host, any process.
    let not_a_kernel = cluster.root.join("not-a-kernel");
    std::fs::write(&not_a_kernel, vec![0x5a; 4096]).expect("write a file that is not a kernel");
    let vm_dirs_before = std::fs::read_dir(cluster.agents[0].2.join("vms"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    cli.fails(
        &[
            "vm",
            "create",
            "x4",
            "--host",
            "h1",
            "--disk",
            "64M",
            "--kernel",
            &not_a_kernel.to_string_lossy(),
            "--start",
        ],
        "vm_start_failed",
    )
    .await;
    let vm_dirs_after = std::fs::read_dir(cluster.agents[0].2.join("vms"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(
        vm_dirs_after, vm_dirs_before,
        "no VM directory or disk is left on h1"
    );
    assert!(
        qemu_pids(&cluster.agents[0].2).is_empty(),
        "no QEMU process is left on h1"
    );
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

fn qemu_img_create(path: &Path, format: &str, options: &[&str]) {
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .args(options)
        .arg(path)
        .arg("16M")
        .status()
        .expect("qemu-img runs");
    assert!(status.success(), "qemu-img create {format}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_shares_imports_refresh_and_removal_through_the_cli() {
    let cluster = Cluster::start("e2e_library", 1).await;
    let cli = cluster.cli.clone();
    let share_dir = cluster.root.join("share");
    let sources = cluster.root.join("sources");
    std::fs::create_dir_all(&sources).expect("sources dir");

    let servers = cli.json(&["library", "server", "list"]).await;
    let servers = servers.as_array().expect("array");
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["name"], "h1");
    let transfer = servers[0]["transfer_address"].as_str().expect("address");
    assert!(
        transfer.starts_with("127.0.0.1:") && !transfer.ends_with(":0"),
        "{transfer}"
    );

    cli.fails(
        &[
            "library", "share", "add", "main", "--server", "h1", "--path", "relative",
        ],
        "invalid_share_path",
    )
    .await;
    cli.fails(
        &["library", "import", "/nowhere/disk.qcow2"],
        "share_required",
    )
    .await;
    let share_path = share_dir.display().to_string();
    cli.add_main_share(&share_dir).await;
    cli.fails(
        &[
            "library",
            "share",
            "add",
            "main",
            "--server",
            "h1",
            "--path",
            &share_path,
        ],
        "share_exists",
    )
    .await;
    let shares = cli.json(&["library", "share", "list"]).await;
    assert_eq!(shares[0]["server"], "h1");

    // A stream-optimized VMDK, the kind an OVA carries, becomes a checked qcow2.
    let vmdk = sources.join("appliance.vmdk");
    qemu_img_create(&vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    cli.ok(&["library", "import", &vmdk.display().to_string()])
        .await;
    let item = cli.json(&["library", "show", "appliance"]).await;
    assert_eq!(item["format"], "qcow2");
    assert_eq!(item["kind"], "disk");
    assert_eq!(item["virtual_size"], 16 << 20);
    let stored = share_dir.join("appliance.qcow2");
    let sha256 = item["sha256"].as_str().expect("sha256");
    let digest = std::process::Command::new("sha256sum")
        .arg(&stored)
        .output()
        .expect("sha256sum");
    assert!(String::from_utf8_lossy(&digest.stdout).starts_with(sha256));

    // Bad input: a clear error, and neither an item nor a file left behind.
    let text = sources.join("notes.txt");
    std::fs::write(&text, "not a disk\n").expect("write");
    cli.fails(
        &["library", "import", &text.display().to_string()],
        "image_not_an_image",
    )
    .await;
    let cut = sources.join("cut.qcow2");
    let whole = sources.join("whole.qcow2");
    qemu_img_create(&whole, "qcow2", &["-o", "preallocation=metadata"]);
    let bytes = std::fs::read(&whole).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let outcome = cli
        .run(&["library", "import", &cut.display().to_string()])
        .await;
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("code: image_corrupt")
            || outcome.stderr.contains("code: image_unreadable"),
        "{}",
        outcome.stderr
    );
    cli.fails(
        &[
            "library",
            "import",
            &vmdk.display().to_string(),
            "--name",
            "appliance",
        ],
        "library_item_exists",
    )
    .await;
    assert_eq!(dir_names(&share_dir), ["appliance.qcow2"]);

    // A file dropped into the share by hand appears after a refresh.
    qemu_img_create(&share_dir.join("dropped.qcow2"), "qcow2", &[]);
    cli.ok(&["library", "refresh"]).await;
    let items = cli.json(&["library", "list"]).await;
    let names: Vec<&str> = items
        .as_array()
        .expect("array")
        .iter()
        .map(|item| item["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["appliance", "dropped"]);
    cli.ok(&["library", "refresh", "--share", "main"]).await;
    assert_eq!(
        cli.json(&["library", "list", "--share", "main"])
            .await
            .as_array()
            .expect("array")
            .len(),
        2,
        "a second refresh adds nothing"
    );

    cli.ok(&["library", "remove", "appliance"]).await;
    assert!(!stored.exists());
    cli.fails(&["library", "show", "appliance"], "library_item_not_found")
        .await;
}

/// The README's first command ends in `drover up`: one process runs the server and a local agent,
/// enrolls the agent as a host and logs the CLI in, so `drover host list` works at once; a second
/// start on the same data directory comes back without a new password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_server_and_the_local_host_and_logs_the_cli_in() {
    let artifacts = artifacts_dir("e2e_up");
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let cli = Cli {
        config_home: temp.path().join("config"),
        netns: None,
    };
    let _reaper = QemuReaper {
        agent_dirs: vec![data.join("agent")],
    };
    let (api_port, control_port) = (free_port().to_string(), free_port().to_string());
    let args = [
        "up",
        "--data-dir",
        &data.to_string_lossy(),
        "--api-port",
        &api_port,
        "--control-port",
        &control_port,
    ]
    .map(str::to_owned);
    let loopback = Path::new("127.0.0.1");
    let transfer_port = free_port().to_string();
    let env = [
        ("XDG_CONFIG_HOME", cli.config_home.as_path()),
        ("DROVER_SERVER_BIND_ADDRESS", loopback),
        ("DROVER_AGENT_BIND_ADDRESS", loopback),
        ("DROVER_AGENT_TRANSFER_PORT", Path::new(&transfer_port)),
    ];
    let mut first = Daemon::spawn_with_env(&artifacts, "up-1", &as_strs(&args), &env);
    let password = first.printed("  admin password:").await;
    assert!(!password.is_empty(), "a generated admin password is shown");
    let api = first.printed("  API:").await;
    assert_eq!(api, format!("https://127.0.0.1:{api_port}"));

    let hosts = cli.json(&["host", "list"]).await;
    let hosts = hosts.as_array().expect("a JSON array of hosts");
    assert_eq!(hosts.len(), 1, "the local host was added: {hosts:?}");
    assert_eq!(hosts[0]["state"], "responding");
    assert_eq!(hosts[0]["accelerator"], "tcg");
    let host_name = hosts[0]["name"].as_str().expect("host name").to_owned();
    // The `drover up` machine is also the default library server, with a share in its data dir.
    let shares = cli.json(&["library", "share", "list"]).await;
    assert_eq!(shares[0]["name"], "default", "{shares}");
    assert_eq!(shares[0]["server"], host_name.as_str());
    assert_eq!(
        shares[0]["path"],
        data.join("library").to_string_lossy().as_ref()
    );
    let servers = cli.json(&["library", "server", "list"]).await;
    assert_eq!(
        servers[0]["transfer_address"],
        format!("127.0.0.1:{transfer_port}")
    );

    first.stop(Signal::SIGTERM);
    let second = Daemon::spawn_with_env(&artifacts, "up-2", &as_strs(&args), &env);
    let text = wait_for_text(&second.stdout_log, "Drover is up.", Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !text.contains("admin password:") && text.contains("shown at the first start"),
        "a restart shows no new password: {text}"
    );
    cli.wait_host_state(&host_name, "responding", Duration::from_secs(30))
        .await;
    assert_eq!(
        cli.json(&["host", "list"]).await.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        cli.json(&["library", "share", "list"])
            .await
            .as_array()
            .map(Vec::len),
        Some(1),
        "a restart adds no second default share"
    );
}

/// Host groups, placement and maintenance through the CLI against real processes: a group tree
/// with inherited reserves, both hosts moved in, a rating with reasons, a VM placed without
/// --host on the roomier host, maintenance rating 0, and bad input refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_groups_placement_and_maintenance_through_the_cli() {
    let cluster = Cluster::start("e2e_placement", 2).await;
    let cli = &cluster.cli;
    cli.ok(&["hostgroup", "create", "prod", "--reserve-memory", "1G"])
        .await;
    let web = cli
        .json(&[
            "hostgroup",
            "create",
            "web",
            "--parent",
            "prod",
            "--weight-cpu",
            "3",
        ])
        .await;
    assert_eq!(web["path"], "All Hosts / prod / web");
    let shown = cli.ok(&["hostgroup", "show", "web"]).await;
    assert!(
        shown.contains("reserve_memory_mib") && shown.contains("inherited from prod"),
        "{shown}"
    );
    cli.fails(
        &["hostgroup", "move", "prod", "--parent", "web"],
        "host_group_cycle",
    )
    .await;
    cli.fails(
        &["hostgroup", "set", "web", "--reserve-cpu", "120"],
        "invalid_group_settings",
    )
    .await;
    for host in ["h1", "h2"] {
        cli.ok(&["host", "move", host, "--group", "web"]).await;
    }
    cli.fails(&["hostgroup", "delete", "web"], "host_group_not_empty")
        .await;
    let list = cli.ok(&["hostgroup", "list"]).await;
    assert!(list.contains("All Hosts / prod / web"), "{list}");

    // h1 gets a big VM by name; the next VM goes to h2 without --host.
    cli.ok(&[
        "vm", "create", "big", "--host", "h1", "--memory", "2G", "--disk", "none",
    ])
    .await;
    let rating = cli
        .json(&["placement", "rate", "--memory", "128M", "--group", "prod"])
        .await;
    assert_eq!(rating["ratings"][0]["host_name"], "h2", "{rating}");
    let reasons = rating["ratings"][0]["reasons"].to_string();
    assert!(
        reasons.contains("memory:") && reasons.contains("cpu:"),
        "{reasons}"
    );
    let job = cli
        .json(&[
            "vm", "create", "placed", "--group", "prod", "--memory", "128M", "--disk", "none",
        ])
        .await;
    assert_eq!(
        job["steps"][0]["name"], "Rate hosts and place the VM",
        "{job}"
    );
    assert_eq!(
        cli.vm_field("placed", "host_name").await.as_deref(),
        Some("h2")
    );

    cli.ok(&["host", "maintenance", "on", "h2"]).await;
    let rating = cli.json(&["placement", "rate", "--group", "web"]).await;
    let h2 = rating["ratings"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["host_name"] == "h2"))
        .cloned()
        .expect("h2 rated");
    assert_eq!(h2["rating"], 0.0, "{h2}");
    let table = cli.ok(&["placement", "rate", "--group", "web"]).await;
    assert!(table.contains("maintenance mode"), "{table}");
    cli.fails(
        &["vm", "create", "nope", "--host", "h2", "--disk", "none"],
        "host_in_maintenance",
    )
    .await;
    cli.ok(&["host", "maintenance", "off", "h2"]).await;
    cli.wait_host_state("h2", "responding", Duration::from_secs(10))
        .await;
    for vm in ["big", "placed"] {
        cli.ok(&["vm", "delete", vm]).await;
    }
}

/// Library on h1, VMs on h2: the template's disk goes from h1's transfer port to h2's cache once
/// (agent to agent), and each VM is an overlay on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_from_a_template_are_linked_clones_of_a_disk_fetched_once() {
    let cluster = Cluster::start("e2e_template", 2).await;
    let cli = cluster.cli.clone();
    cluster.add_share_on_h1().await;
    cli.tiny_template("web-**", &[]).await;
    cli.fails(
        &["profile", "hardware", "create", "tiny", "--memory", "16M"],
        "invalid_profile",
    )
    .await;
    cli.fails(
        &["profile", "guest-os", "create", "bad", "--hostname", "a_b"],
        "invalid_profile",
    )
    .await;
    cli.fails(
        &[
            "template",
            "create",
            "t2",
            "--disk",
            "nothing",
            "--hardware",
            "tiny",
        ],
        "library_item_not_found",
    )
    .await;
    let template = cli.json(&["template", "show", "t1"]).await;
    assert_eq!(template["disk"], "tiny-root");
    assert_eq!(template["guest_os"], "web");

    // Two VMs at once: one transfer, two overlays.
    let creates = ["v1", "v2"].map(|name| {
        let cli = cli.clone();
        async move {
            cli.ok(&[
                "vm",
                "create",
                name,
                "--template",
                "t1",
                "--host",
                "h2",
                "--start",
            ])
            .await
        }
    });
    futures_util::future::join_all(creates).await;
    let item = cli.json(&["library", "show", "tiny-root"]).await;
    let sha256 = item["sha256"].as_str().expect("sha256");
    let images = cluster.agents[1].2.join("images");
    let cached: Vec<String> = std::fs::read_dir(&images)
        .expect("h2 image cache")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        cached,
        [format!("{sha256}.qcow2")],
        "one verified base, no partial file"
    );
    for name in ["v1", "v2"] {
        let vm = cli.json(&["vm", "show", name]).await;
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(vm["disk"]["kind"], "library");
        let vm_id = vm["id"].as_str().expect("id");
        let info = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(
                cluster.agents[1]
                    .2
                    .join("vms")
                    .join(vm_id)
                    .join("disk.qcow2"),
            )
            .output()
            .expect("qemu-img info");
        let info: Value = serde_json::from_slice(&info.stdout).expect("info JSON");
        assert_eq!(
            info["backing-filename"],
            images.join(format!("{sha256}.qcow2")).display().to_string(),
            "{name} is a linked clone"
        );
        // The guest OS profile reached the guest as a cloud-init seed: it names itself web-XX.
        let serial = cluster.agents[1]
            .2
            .join("vms")
            .join(vm_id)
            .join("serial.log");
        let text = wait_for_text(&serial, "TINYVM-HOSTNAME web-", Duration::from_secs(120))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let hostname = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("TINYVM-HOSTNAME "))
            .expect("the marker line");
        assert!(
            hostname.len() == 6 && hostname[4..].chars().all(|c| c.is_ascii_alphanumeric()),
            "{hostname}"
        );
    }
    assert!(
        !cluster.agents[0].2.join("images").exists(),
        "the library server itself fetched nothing"
    );

    // The item a template uses stays.
    let outcome = cli.run(&["library", "remove", "tiny-root"]).await;
    assert_eq!(outcome.code, 1);
    assert!(
        outcome.stderr.contains("library_item_in_use") && outcome.stderr.contains("t1"),
        "{}",
        outcome.stderr
    );
    cli.fails(&["host", "remove", "h1"], "library_item_in_use")
        .await;
    for name in ["v1", "v2"] {
        cli.ok(&["vm", "delete", name]).await;
    }
}

/// `qemu-img info` of a VM's disk file on its host.
fn disk_info(agent_dir: &Path, vm_id: &str, file: &str) -> Value {
    let output = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(agent_dir.join("vms").join(vm_id).join(file))
        .output()
        .expect("qemu-img info");
    assert!(output.status.success(), "qemu-img info {vm_id}/{file}");
    serde_json::from_slice(&output.stdout).expect("info JSON")
}

/// `--full-clone` through the CLI: the VM's disk is an independent qcow2 (no backing file) and
/// the guest boots from it with its guest OS profile applied (and an ISO in its drive). Then a
/// plain create with data disks, a boot order and a machine type, and `vm show` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_clones_read_through_nothing_and_vm_devices_show() {
    let cluster = Cluster::start("e2e_full_clone", 2).await;
    let cli = cluster.cli.clone();
    cluster.add_share_on_h1().await;
    cli.tiny_template("full-**", &[]).await;
    let iso = cluster.root.join("tools.iso");
    make_iso(&iso, "TOOLS");
    cli.ok(&[
        "library",
        "import",
        &iso.display().to_string(),
        "--name",
        "tools",
    ])
    .await;
    cli.ok(&[
        "vm",
        "create",
        "f1",
        "--template",
        "t1",
        "--host",
        "h2",
        "--full-clone",
        "--iso",
        "tools",
        "--start",
    ])
    .await;
    let vm = cli.json(&["vm", "show", "f1"]).await;
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["disk"]["kind"], "library_copy", "{vm}");
    assert_eq!(
        vm["cdrom"]["iso"]["item"], "tools",
        "a template VM takes --iso too: {vm}"
    );
    let vm_id = vm["id"].as_str().expect("id");
    let host_dir = &cluster.agents[1].2;
    let info = disk_info(host_dir, vm_id, "disk.qcow2");
    assert_eq!(info["format"], "qcow2");
    assert!(
        info.get("backing-filename").is_none(),
        "a full clone reads through nothing: {info}"
    );
    let item = cli.json(&["library", "show", "tiny-root"]).await;
    assert_eq!(info["virtual-size"], item["virtual_size"]);
    let serial = host_dir.join("vms").join(vm_id).join("serial.log");
    let text = wait_for_text(&serial, "TINYVM-HOSTNAME full-", Duration::from_secs(90))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("TINYVM-HOSTNAME "))
            .any(|name| name.len() == 7),
        "the guest names itself full-XX: {text}"
    );
    cli.ok(&["vm", "delete", "f1"]).await;

    // Devices on a plain create, refused when malformed.
    let create = [
        "vm",
        "create",
        "d1",
        "--host",
        "h2",
        "--disk",
        "32M",
        "--data-disk",
        "16M",
        "--data-disk",
        "8M",
        "--boot",
        "cdrom,disk,network",
        "--machine",
        "q35",
    ];
    for (bad, code) in [
        (["--boot", "floppy,disk"], "invalid_vm_spec"),
        (["--machine", "q35,accel=kvm"], "invalid_vm_spec"),
        (["--iso", "nothing"], "library_item_not_found"),
        (["--iso", "tiny-root"], "invalid_vm_spec"),
    ] {
        cli.fails(&[&create[..7], &bad].concat(), code).await;
    }
    cli.ok(&create).await;
    let vm = cli.json(&["vm", "show", "d1"]).await;
    assert_eq!(
        vm["data_disks"],
        serde_json::json!([
            {"kind": "blank", "size_bytes": 16 << 20},
            {"kind": "blank", "size_bytes": 8 << 20},
        ]),
        "{vm}"
    );
    assert_eq!(
        vm["boot_order"],
        serde_json::json!(["cdrom", "disk", "network"])
    );
    assert_eq!(vm["machine"], "q35");
    let vm_id = vm["id"].as_str().expect("id");
    for (file, size) in [("disk1.qcow2", 16 << 20), ("disk2.qcow2", 8 << 20)] {
        assert_eq!(
            disk_info(host_dir, vm_id, file)["virtual-size"],
            size,
            "{file}"
        );
    }
    let shown = cli.ok(&["vm", "show", "d1"]).await;
    for line in [
        "disk1: 16 MiB (blank)",
        "disk2: 8 MiB (blank)",
        "cdrom, disk, network",
        "q35",
    ] {
        assert!(shown.contains(line), "{line} not in:\n{shown}");
    }
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("CD-ROM:") && l.ends_with("empty")),
        "a boot order naming cdrom gives an empty drive:\n{shown}"
    );
    cli.ok(&["vm", "delete", "d1"]).await;
}

/// Makes an ISO 9660 image at `iso` holding `marker.txt` with `marker` in it (xorriso).
fn make_iso(iso: &Path, marker: &str) {
    let source = iso.with_extension("d");
    std::fs::create_dir_all(&source).expect("ISO source dir");
    std::fs::write(source.join("marker.txt"), format!("{marker}\n")).expect("marker file");
    let output = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "DROVERTEST", "-o"])
        .arg(iso)
        .arg(&source)
        .output()
        .expect("xorriso (scripts/install-deps.sh installs it)");
    assert!(
        output.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An El Torito "no emulation" boot image: 16-bit code that writes `DROVER-CDBOOT` to the
/// first serial port and halts (`mov dx,0x3f8; call $+3; pop si; push cs; pop ds; add si,17;
/// .l: lodsb; test al,al; jz .h; out dx,al; jmp .l; .h: hlt; jmp .h; db "DROVER-CDBOOT",13,10,0`).
const CD_BOOT_CODE: &[u8] =
    b"\xba\xf8\x03\xe8\x00\x00\x5e\x0e\x1f\x83\xc6\x11\xac\x84\xc0\x74\x03\xee\xeb\xf8\xf4\xeb\xfd\
DROVER-CDBOOT\r\n\x00";

/// Makes a bootable ISO at `iso` whose boot image runs [`CD_BOOT_CODE`] (xorriso).
fn make_boot_iso(iso: &Path) {
    let source = iso.with_extension("d");
    std::fs::create_dir_all(&source).expect("ISO source dir");
    let mut image = CD_BOOT_CODE.to_vec();
    image.resize(2048, 0);
    std::fs::write(source.join("boot.img"), image).expect("boot image");
    let output = std::process::Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "DROVERBOOT",
            "-b",
            "boot.img",
        ])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-o"])
        .arg(iso)
        .arg(&source)
        .output()
        .expect("xorriso");
    assert!(
        output.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A library ISO in a running guest's CD-ROM drive: fetched into the host's cache, mounted and
/// read by the guest, ejected and inserted again while it runs, and kept in the library while a
/// VM holds it. Then a VM that boots from a bootable ISO (`--boot cdrom,disk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_isos_in_a_cd_rom_drive_through_the_cli() {
    const MARKER: &str = "DROVER-ISO-MARKER-7f3a";
    let cluster = Cluster::start("e2e_cdrom", 2).await;
    let cli = cluster.cli.clone();
    cluster.add_share_on_h1().await;
    let iso = cluster.root.join("tools.iso");
    make_iso(&iso, MARKER);
    cli.ok(&[
        "library",
        "import",
        &iso.display().to_string(),
        "--name",
        "tools",
    ])
    .await;
    let item = cli.json(&["library", "show", "tools"]).await;
    assert_eq!(item["kind"], "iso", "{item}");
    let sha256 = item["sha256"].as_str().expect("sha256").to_owned();

    let mut create = guest_args("c1", "h2", "160M");
    create.extend(["--iso".to_owned(), "tools".to_owned()]);
    cli.ok(&as_strs(&create)).await;
    let vm = cli.json(&["vm", "show", "c1"]).await;
    assert_eq!(vm["cdrom"]["iso"]["item"], "tools", "{vm}");
    let cached = cluster.agents[1]
        .2
        .join("images")
        .join(format!("{sha256}.qcow2"));
    assert_eq!(
        sha256_of(&cached),
        sha256,
        "the host cached the verified ISO"
    );
    let shown = cli.ok(&["vm", "show", "c1"]).await;
    assert!(shown.contains("ISO tools"), "{shown}");

    let mut shell = GuestShell::open(&cli, "c1").await;
    let minute = Duration::from_secs(60);
    assert!(
        shell
            .succeeds("modprobe ata_piix && modprobe sr_mod", minute)
            .await
    );
    let read_marker = format!(
        "(for i in 1 2 3 4 5 6 7 8 9 10; do dd if=/dev/sr0 bs=2048 count=400 2>/dev/null | grep -q {MARKER} && exit 0; sleep 1; done; exit 1)"
    );
    assert!(
        shell
            .succeeds(
                &format!(
                    "(for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/sr0 ] && exit 0; sleep 1; done; exit 1) \
                     && mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd \
                     && grep -q {MARKER} /mnt/cd/marker.txt && umount /mnt/cd"
                ),
                minute
            )
            .await,
        "the guest mounts the ISO and reads the marker:\n{}",
        shell.output()
    );

    // In use: the library keeps it.
    let outcome = cli.run(&["library", "remove", "tools"]).await;
    assert_eq!(outcome.code, 1);
    assert!(
        outcome.stderr.contains("library_item_in_use") && outcome.stderr.contains("c1"),
        "{}",
        outcome.stderr
    );

    // Eject and insert while the guest runs.
    cli.ok(&["vm", "iso", "eject", "c1"]).await;
    let vm = cli.json(&["vm", "show", "c1"]).await;
    assert_eq!(vm["cdrom"], serde_json::json!({}), "an empty drive: {vm}");
    assert!(
        shell
            .succeeds(
                "! dd if=/dev/sr0 bs=2048 count=1 of=/dev/null 2>/dev/null",
                minute
            )
            .await,
        "the guest finds no medium after the eject"
    );
    cli.ok(&["vm", "iso", "insert", "c1", "tools"]).await;
    assert!(
        shell.succeeds(&read_marker, minute).await,
        "the guest reads the ISO's bytes after a hot insert:\n{}",
        shell.output()
    );
    shell.detach().await;

    // A running VM without a drive cannot get one; a stopped one can.
    cli.ok(&as_strs(&guest_args("c2", "h2", "128M"))).await;
    cli.fails(&["vm", "iso", "insert", "c2", "tools"], "no_cdrom_drive")
        .await;
    cli.ok(&["vm", "stop", "c2"]).await;
    cli.ok(&["vm", "iso", "eject", "c2"]).await;
    let vm = cli.json(&["vm", "show", "c2"]).await;
    assert!(vm.get("cdrom").is_none(), "an eject adds no drive: {vm}");
    cli.ok(&["vm", "iso", "insert", "c2", "tools"]).await;
    let vm = cli.json(&["vm", "show", "c2"]).await;
    assert_eq!(vm["cdrom"]["iso"]["item"], "tools", "{vm}");
    cli.ok(&["vm", "iso", "eject", "c2"]).await;
    cli.ok(&["vm", "iso", "eject", "c1"]).await;
    cli.ok(&["library", "remove", "tools"]).await;

    // `cdrom` first in the boot order: the firmware boots the ISO, not the (blank) disk.
    let boot_iso = cluster.root.join("boot.iso");
    make_boot_iso(&boot_iso);
    cli.ok(&[
        "library",
        "import",
        &boot_iso.display().to_string(),
        "--name",
        "bootcd",
    ])
    .await;
    cli.ok(&[
        "vm",
        "create",
        "b1",
        "--host",
        "h2",
        "--memory",
        "64M",
        "--disk",
        "8M",
        "--iso",
        "bootcd",
        "--boot",
        "cdrom,disk",
        "--start",
    ])
    .await;
    let b1 = cli.vm_field("b1", "id").await.expect("id");
    let serial = cluster.agents[1].2.join("vms").join(&b1).join("serial.log");
    wait_for_text(&serial, "DROVER-CDBOOT", minute)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    for name in ["c1", "c2", "b1"] {
        cli.ok(&["vm", "delete", name]).await;
    }
}

/// The tick numbers the guest printed to its serial log after byte `from`.
fn serial_ticks(serial_log: &Path, from: usize) -> Vec<u64> {
    let text = std::fs::read_to_string(serial_log).unwrap_or_default();
    text.get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split("TINYVM-TICK ").nth(1))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len() as usize)
}

/// Waits until the guest ticked after byte `from` of its serial log; the ticks since.
async fn ticks_after(serial_log: &Path, from: usize) -> Vec<u64> {
    wait_until("the guest ticks", Duration::from_secs(60), async || {
        let ticks = serial_ticks(serial_log, from);
        (ticks.len() >= 2).then_some(ticks)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Creates VM `name` on `host`, stopped, with a blank disk of `disk` (never booted).
async fn create_stopped_vm(cli: &Cli, name: &str, host: &str, disk: &str) -> String {
    cli.ok(&[
        "vm", "create", name, "--host", host, "--cpus", "1", "--memory", "128M", "--disk", disk,
    ])
    .await;
    cli.vm_field(name, "id").await.expect("the VM's id")
}

fn sha256_of(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Stopped VMs go host -> library and back (library -> another host) over the transfer port;
/// the server refuses what does not fit the VM's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_vms_move_to_the_library_and_back_through_the_cli() {
    let cluster = Cluster::start("e2e_store", 2).await;
    let cli = cluster.cli.clone();
    let share = cluster.add_share_on_h1().await;
    cli.ok(&as_strs(&guest_args("busy", "h2", "128M"))).await;
    cli.fails(&["vm", "store", "busy"], "vm_state_conflict")
        .await;
    cli.ok(&["vm", "delete", "busy"]).await;
    let vm_id = create_stopped_vm(&cli, "s1", "h2", "64M").await;
    let host_dir = cluster.agents[1].2.join("vms").join(&vm_id);
    let disk_sha256 = sha256_of(&host_dir.join("disk.qcow2"));
    cli.fails(&["vm", "deploy", "s1", "--host", "h1"], "vm_state_conflict")
        .await;
    cli.fails(&["vm", "store", "s1", "--share", "none"], "share_not_found")
        .await;

    let job = cli.json(&["vm", "store", "s1"]).await;
    assert_eq!(job["kind"], "vm.store");
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        job["steps"][0]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(" in ")),
        "the copy step says how much and how fast: {job}"
    );
    let stored = cli.json(&["vm", "show", "s1"]).await;
    assert_eq!(stored["state"], "stored");
    assert_eq!(stored["host_name"], "h1");
    assert!(!host_dir.exists(), "the host keeps nothing");
    let stored_disk = share.join(".stored-vms").join(&vm_id).join("disk.qcow2");
    assert_eq!(sha256_of(&stored_disk), disk_sha256);
    cli.fails(&["vm", "start", "s1"], "vm_state_conflict").await;
    let items = cli.json(&["library", "list"]).await;
    assert_eq!(items, serde_json::json!([]), "a stored VM is not an item");

    // Placement picks a host for it; h1 (the library server) is a host too, so name h2.
    cli.ok(&["vm", "deploy", "s1", "--host", "h2"]).await;
    let deployed = cli.json(&["vm", "show", "s1"]).await;
    assert_eq!(deployed["state"], "stopped");
    assert_eq!(deployed["host_name"], "h2");
    assert_eq!(
        claimed_vms(&cli, "h2").await,
        1,
        "the deploy's claim became the VM's own, counted once"
    );
    assert_eq!(sha256_of(&host_dir.join("disk.qcow2")), disk_sha256);
    assert!(!stored_disk.exists(), "the library keeps nothing");
    cli.ok(&["vm", "start", "s1"]).await;
    cli.wait_vm_state("s1", "running", Duration::from_secs(30))
        .await;
    cli.ok(&["vm", "stop", "s1"]).await;

    // A stored VM's delete removes its stored copy too.
    cli.ok(&["vm", "store", "s1"]).await;
    assert!(stored_disk.exists());
    cli.ok(&["vm", "delete", "s1"]).await;
    assert!(!stored_disk.parent().expect("the VM's directory").exists());
}

/// The transfer rate both agents of the kill-and-resume test send at, so that a kill lands
/// mid-transfer.
const PACED_RATE: &str = "32M";

/// Restarts agent `index` with `agent.transfer_rate_limit` set and plain (uncoloured) logs.
async fn restart_paced_agent(cluster: &mut Cluster, index: usize, incarnation: u32) {
    let (daemon, port, dir) = &mut cluster.agents[index];
    daemon.stop(Signal::SIGKILL);
    let args = agent_args(dir, *port);
    *daemon = Daemon::spawn_with_env(
        &cluster.artifacts,
        &format!("agent{}-{incarnation}", index + 1),
        &as_strs(&args),
        &[
            ("DROVER_AGENT_TRANSFER_RATE_LIMIT", Path::new(PACED_RATE)),
            ("NO_COLOR", Path::new("1")),
        ],
    );
    let host = format!("h{}", index + 1);
    cluster
        .cli
        .wait_host_state(&host, "responding", Duration::from_secs(60))
        .await;
}

/// The size of the hidden partial file in `dir`, once one exists.
fn partial_size(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().contains(".part-"))
        .and_then(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
}

/// Waits until a transfer into `dir` has at least `bytes` in place.
async fn wait_for_partial(dir: &Path, bytes: u64) -> u64 {
    wait_until(
        "a transfer under way",
        Duration::from_secs(60),
        async || partial_size(dir).filter(|size| *size >= bytes),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_restore_and_checkpoints_through_the_cli() {
    let cluster = Cluster::start("e2e_checkpoints", 1).await;
    let cli = cluster.cli.clone();
    let guest = guest();
    cli.ok(&[
        "vm",
        "create",
        "cp",
        "--host",
        "h1",
        "--memory",
        "256M",
        "--image",
        &guest.rootfs_qcow2.to_string_lossy(),
        "--kernel",
        &guest.kernel.to_string_lossy(),
        "--initrd",
        &guest.initrd.to_string_lossy(),
        "--cmdline",
        "console=ttyS0 quiet tiny.root=/dev/vda tiny.shell=1 tiny.tick=1",
        "--start",
    ])
    .await;
    let vm_id = cli.json(&["vm", "show", "cp"]).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let vm_dir = cluster.agents[0].2.join("vms").join(&vm_id);
    let serial_log = vm_dir.join("serial.log");

    // Save and start: the guest goes on where it was, with what it wrote.
    let mut shell = GuestShell::open(&cli, "cp").await;
    assert!(
        shell
            .succeeds("echo kept > /before-save && sync", Duration::from_secs(30))
            .await
    );
    shell.detach().await;
    ticks_after(&serial_log, 0).await;
    cli.ok(&["vm", "save", "cp"]).await;
    assert_eq!(cli.vm_field("cp", "state").await.as_deref(), Some("saved"));
    assert!(vm_dir.join("saved.state").exists());
    let before = serial_ticks(&serial_log, 0);
    let last_before = *before.last().expect("ticks before the save");
    cli.fails(&["vm", "checkpoint", "create", "cp"], "vm_state_conflict")
        .await;
    let from = file_len(&serial_log);
    cli.ok(&["vm", "start", "cp"]).await;
    assert_eq!(
        cli.vm_field("cp", "state").await.as_deref(),
        Some("running")
    );
    let after = ticks_after(&serial_log, from).await;
    assert!(
        after.iter().all(|tick| *tick > last_before),
        "the tick counter goes on from {last_before}: {after:?}"
    );
    let mut shell = GuestShell::open(&cli, "cp").await;
    let timeout = Duration::from_secs(30);
    assert!(shell.succeeds("grep -q kept /before-save", timeout).await);
    assert!(
        shell
            .succeeds(
                &format!("[ $(cut -d. -f1 /proc/uptime) -ge {last_before} ]"),
                timeout
            )
            .await,
        "the guest's uptime went on: no reboot"
    );
    shell.detach().await;
    assert!(!vm_dir.join("saved.state").exists());

    // A checkpoint of the running guest, then a file, then back to the checkpoint.
    cli.ok(&["vm", "checkpoint", "create", "cp", "--name", "c1"])
        .await;
    let at_checkpoint = *serial_ticks(&serial_log, 0).last().expect("ticks");
    cli.fails(
        &["vm", "checkpoint", "create", "cp", "--name", "c1"],
        "checkpoint_exists",
    )
    .await;
    let mut shell = GuestShell::open(&cli, "cp").await;
    assert!(
        shell
            .succeeds("echo new > /after-checkpoint && sync", timeout)
            .await
    );
    shell.detach().await;
    let from = file_len(&serial_log);
    ticks_after(&serial_log, from).await;
    cli.fails(
        &["vm", "checkpoint", "restore", "cp", "nope"],
        "checkpoint_not_found",
    )
    .await;
    let from = file_len(&serial_log);
    cli.ok(&["vm", "checkpoint", "restore", "cp", "c1"]).await;
    assert_eq!(
        cli.vm_field("cp", "state").await.as_deref(),
        Some("running")
    );
    let after = ticks_after(&serial_log, from).await;
    assert!(
        after[0] <= at_checkpoint + 2,
        "the tick counter is back near {at_checkpoint}: {after:?}"
    );
    let mut shell = GuestShell::open(&cli, "cp").await;
    assert!(
        shell.succeeds("[ ! -e /after-checkpoint ]", timeout).await,
        "the file written after the checkpoint is gone"
    );
    shell.detach().await;

    let listed = cli.json(&["vm", "checkpoint", "list", "cp"]).await;
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["name"],
            &listed[0]["with_memory"],
            &listed[0]["current"],
            &listed[0]["on_host"]
        ),
        (
            &Value::from("c1"),
            &Value::from(true),
            &Value::from(true),
            &Value::from(true)
        )
    );
    let c1_id = listed[0]["id"].as_str().expect("id").to_owned();

    // Stopped: a disk-only checkpoint; restoring c1 starts the guest from its memory.
    cli.ok(&["vm", "stop", "cp"]).await;
    cli.fails(&["vm", "save", "cp"], "vm_state_conflict").await;
    cli.ok(&["vm", "checkpoint", "create", "cp", "--name", "c2"])
        .await;
    let listed = cli.json(&["vm", "checkpoint", "list", "cp"]).await;
    assert_eq!(listed[1]["with_memory"], false, "{listed}");
    assert_eq!(listed[1]["parent"], c1_id.as_str(), "{listed}");
    cli.ok(&["vm", "checkpoint", "restore", "cp", "c1"]).await;
    assert_eq!(
        cli.vm_field("cp", "state").await.as_deref(),
        Some("running")
    );
    cli.ok(&["vm", "checkpoint", "restore", "cp", "c2"]).await;
    assert_eq!(
        cli.vm_field("cp", "state").await.as_deref(),
        Some("stopped"),
        "a stopped checkpoint gives a stopped VM"
    );

    // Stop of a saved VM discards its saved state.
    cli.ok(&["vm", "start", "cp"]).await;
    cli.ok(&["vm", "save", "cp"]).await;
    cli.fails(
        &["vm", "checkpoint", "restore", "cp", "c1"],
        "vm_state_conflict",
    )
    .await;
    cli.ok(&["vm", "stop", "cp"]).await;
    assert_eq!(
        cli.vm_field("cp", "state").await.as_deref(),
        Some("stopped")
    );
    assert!(!vm_dir.join("saved.state").exists());

    cli.ok(&["vm", "checkpoint", "delete", "cp", "c2"]).await;
    let listed = cli.json(&["vm", "checkpoint", "list", "cp"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    cli.ok(&[
        "vm",
        "create",
        "nodisk",
        "--host",
        "h1",
        "--disk",
        "none",
        "--kernel",
        &guest.kernel.to_string_lossy(),
    ])
    .await;
    cli.fails(&["vm", "checkpoint", "create", "nodisk"], "vm_has_no_disk")
        .await;
    cli.ok(&["vm", "delete", "nodisk"]).await;
    cli.ok(&["vm", "delete", "cp"]).await;
    assert!(
        !vm_dir.exists(),
        "the VM's files, checkpoints and all, are gone"
    );
}

/// The bytes that crossed the network in the last "VM files fetched" line of an agent's log.
fn last_received(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).expect("agent log");
    text.lines()
        .filter(|line| line.contains("VM files fetched"))
        .filter_map(|line| line.split("received=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .expect("a fetch logged")
}

/// Waits for a job to end and answers it.
async fn finished_job(cli: &Cli, id: &str) -> Value {
    wait_until(
        &format!("job {id} ends"),
        Duration::from_secs(120),
        async || {
            let job = cli.json(&["job", "show", id]).await;
            ["completed", "failed"]
                .contains(&job["status"].as_str()?)
                .then_some(job)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Replaces the qcow2 `disk` with one holding `mib` MiB of incompressible data, so that it is as
/// large on the wire as on disk; its size.
fn fill_with_random_data(scratch: &Path, disk: &Path, mib: u64) -> u64 {
    let raw = scratch.join("random.raw");
    let mut bytes = vec![0_u8; usize::try_from(mib << 20).expect("fits")];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut bytes,
    )
    .expect("random bytes");
    std::fs::write(&raw, &bytes).expect("write raw");
    drop(bytes);
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(disk)
        .status()
        .expect("qemu-img convert");
    assert!(converted.success());
    std::fs::remove_file(&raw).expect("remove the raw file");
    std::fs::metadata(disk).expect("disk").len()
}

/// Two hosts whose agents send at most 2 MiB/s, share `main` on h1, and the stopped VM `big` on
/// h2 with a disk of incompressible data: a copy slow enough to interrupt.
struct PacedCopy {
    cluster: Cluster,
    share: PathBuf,
    vm_id: String,
    /// `big`'s directory on h2.
    host_vm_dir: PathBuf,
    /// The size of `big`'s disk file.
    total: u64,
}

impl PacedCopy {
    async fn start(test: &str, disk_mib: u64) -> Self {
        let mut cluster = Cluster::start(test, 2).await;
        restart_paced_agent(&mut cluster, 0, 2).await;
        restart_paced_agent(&mut cluster, 1, 2).await;
        let share = cluster.add_share_on_h1().await;
        let vm_id = create_stopped_vm(&cluster.cli, "big", "h2", &format!("{disk_mib}M")).await;
        let host_vm_dir = cluster.agents[1].2.join("vms").join(&vm_id);
        let total = fill_with_random_data(&cluster.root, &host_vm_dir.join("disk.qcow2"), disk_mib);
        Self {
            cluster,
            share,
            vm_id,
            host_vm_dir,
            total,
        }
    }
}

/// Store and deploy with a kill mid-transfer: first the sending agent, which the job waits for
/// and then fetches from again, then the receiving one, whose failed job is restarted. Each
/// time only what was missing crosses the network again, and the result is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_transfer_ends_resume_where_they_stopped() {
    let PacedCopy {
        mut cluster,
        share,
        vm_id,
        host_vm_dir,
        total,
    } = PacedCopy::start("e2e_transfer_resume", 160).await;
    let cli = cluster.cli.clone();
    let disk = host_vm_dir.join("disk.qcow2");
    let disk_sha256 = sha256_of(&disk);

    // Store, killing and restarting the sender (h2) a quarter of the way.
    let stored_dir = share.join(".stored-vms").join(&vm_id);
    let job = cli.json(&["vm", "store", "big", "--async"]).await;
    let job_id = job["id"].as_str().expect("job id").to_owned();
    // The job shows the transfer as it goes: bytes of the whole, and the rate.
    let detail = wait_until(
        "transfer progress in the job",
        Duration::from_secs(60),
        async || {
            let job = cli.json(&["job", "show", &job_id]).await;
            let detail = job["steps"][0]["detail"].as_str()?.to_owned();
            (detail.contains(" of ") && detail.ends_with("/s")).then_some(detail)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(detail.contains("MiB"), "{detail}");
    let kept = wait_for_partial(&stored_dir, total / 4).await;
    restart_paced_agent(&mut cluster, 1, 3).await;
    let job = finished_job(&cli, &job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let received = last_received(&cluster.artifacts.join("agent1-2.log"));
    assert!(
        received <= total - kept && received > 0,
        "resumed: {received} of {total} bytes sent again, {kept} were kept"
    );
    assert_eq!(sha256_of(&stored_dir.join("disk.qcow2")), disk_sha256);
    assert_eq!(
        cli.vm_field("big", "state").await.as_deref(),
        Some("stored")
    );
    assert!(!host_vm_dir.exists());

    // Deploy back to h2, killing the receiver (h2) a quarter of the way.
    let job = cli
        .json(&["vm", "deploy", "big", "--host", "h2", "--async"])
        .await;
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let kept = wait_for_partial(&host_vm_dir, total / 4).await;
    cluster.agents[1].0.stop(Signal::SIGKILL);
    let failed = finished_job(&cli, &job_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        cli.vm_field("big", "state").await.as_deref(),
        Some("stored")
    );
    restart_paced_agent(&mut cluster, 1, 4).await;
    let job = cli.json(&["job", "restart", &job_id]).await;
    assert_eq!(job["status"], "completed", "{job}");
    let received = last_received(&cluster.artifacts.join("agent2-4.log"));
    assert!(
        received <= total - kept && received > 0,
        "resumed: {received} of {total} bytes sent again, {kept} were kept"
    );
    assert_eq!(sha256_of(&disk), disk_sha256);
    assert_eq!(
        cli.vm_field("big", "state").await.as_deref(),
        Some("stopped")
    );
    assert!(!stored_dir.exists());
    cli.ok(&["vm", "delete", "big"]).await;
}

/// How many VMs host `host` holds a claim for (its own VMs and deploys under way).
async fn claimed_vms(cli: &Cli, host: &str) -> u64 {
    cli.json(&["host", "show", host]).await["vm_count"]
        .as_u64()
        .expect("vm_count")
}

/// A deploy claims its host's capacity before the copy starts. Canceled mid-copy, or failed
/// for a reason a retry would not fix (a stored copy that no longer matches its fingerprint),
/// it gives the claim back and leaves no files on the host; the VM stays Stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_or_failed_deploys_give_back_their_claim_and_files() {
    let PacedCopy {
        cluster,
        share,
        vm_id,
        host_vm_dir,
        total,
    } = PacedCopy::start("e2e_deploy_cleanup", 96).await;
    let cli = cluster.cli.clone();
    cli.ok(&["vm", "store", "big"]).await;
    assert_eq!(
        claimed_vms(&cli, "h2").await,
        0,
        "a stored VM claims nothing"
    );

    let job = cli
        .json(&["vm", "deploy", "big", "--host", "h2", "--async"])
        .await;
    let job_id = job["id"].as_str().expect("job id").to_owned();
    wait_for_partial(&host_vm_dir, total / 8).await;
    assert_eq!(
        claimed_vms(&cli, "h2").await,
        1,
        "the host's capacity is claimed while the copy runs"
    );
    cli.ok(&["job", "cancel", &job_id]).await;
    let canceled = wait_until("the deploy canceled", Duration::from_secs(60), async || {
        let job = cli.json(&["job", "show", &job_id]).await;
        (job["status"] != "running" && job["status"] != "queued").then_some(job)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    wait_until(
        "the partial copy removed",
        Duration::from_secs(30),
        async || (!host_vm_dir.exists()).then_some(()),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        cli.vm_field("big", "state").await.as_deref(),
        Some("stored")
    );
    assert_eq!(claimed_vms(&cli, "h2").await, 0, "the claim was given back");

    // A stored copy changed behind the library's back: the copy fails its check for good.
    let stored_disk = share.join(".stored-vms").join(&vm_id).join("disk.qcow2");
    let mut bytes = std::fs::read(&stored_disk).expect("stored disk");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored_disk, &bytes).expect("damage the stored disk");
    drop(bytes);
    cli.fails(&["vm", "deploy", "big", "--host", "h2"], "agent_error")
        .await;
    assert!(!host_vm_dir.exists(), "no files left on the host");
    assert_eq!(
        cli.vm_field("big", "state").await.as_deref(),
        Some("stored")
    );
    assert_eq!(claimed_vms(&cli, "h2").await, 0, "the claim was given back");
    cli.ok(&["vm", "delete", "big"]).await;
}

fn qemu_img_convert(source: &Path, target: &Path, format: &str, options: &[&str]) {
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-O", format])
        .args(options)
        .arg(source)
        .arg(target)
        .status()
        .expect("qemu-img convert");
    assert!(status.success(), "qemu-img convert to {format}");
}

/// An OVF for a 1-vCPU, 160 MiB machine with one NIC, the disk `href` and a blank 32 MiB disk.
fn tiny_ovf(href: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="f1" ovf:href="{href}"/></References>
  <DiskSection>
    <Disk ovf:diskId="root" ovf:fileRef="f1" ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20"/>
    <Disk ovf:diskId="scratch" ovf:capacity="32" ovf:capacityAllocationUnits="byte * 2^20"/>
  </DiskSection>
  <VirtualSystem ovf:id="tiny"><VirtualHardwareSection>
    <Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
    <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>160</rasd:VirtualQuantity></Item>
    <Item><rasd:ResourceType>10</rasd:ResourceType></Item>
    <Item><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/root</rasd:HostResource></Item>
    <Item><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/scratch</rasd:HostResource></Item>
  </VirtualHardwareSection></VirtualSystem>
</Envelope>"#
    )
}

/// Runs `program` in `dir`; its stdout.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

fn names_of(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|object| object["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

/// V2V of a VMware VM (the tiny guest's disk as a VMDK next to a VMX) to a stopped VM that boots
/// its imported disk; an OVA imported as an item and a hardware profile; a hardware profile's
/// data disk, NICs, boot order and machine type reaching the guest of a VM made from a
/// template; profile and template deletes; bad packages leaving nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2v_packages_and_hardware_profiles_through_the_cli() {
    let cluster = Cluster::start("e2e_v2v", 1).await;
    let cli = cluster.cli.clone();
    let guest = guest();
    let share = cluster.add_share_on_h1().await;
    let packages = cluster.root.join("packages");
    std::fs::create_dir(&packages).expect("mkdir");
    let kernel = guest.kernel.display().to_string();
    let initrd = guest.initrd.display().to_string();
    let direct_boot = [
        "--kernel",
        kernel.as_str(),
        "--initrd",
        initrd.as_str(),
        "--cmdline",
        "console=ttyS0 quiet tiny.shell=1",
    ];

    // VMX + monolithicSparse VMDK -> a stopped VM with the VMX's hardware.
    qemu_img_convert(
        &guest.rootfs_qcow2,
        &packages.join("tiny.vmdk"),
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
    );
    let vmx = packages.join("tiny.vmx");
    std::fs::write(
        &vmx,
        ".encoding = \"UTF-8\"\nnumvcpus = \"1\"\nmemsize = \"160\"\n\
         scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"tiny.vmdk\"\n\
         ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\n",
    )
    .expect("vmx");
    cli.ok(&[
        "v2v",
        "import",
        &vmx.display().to_string(),
        "--name",
        "tv",
        "--host",
        "h1",
    ]
    .iter()
    .chain(&direct_boot)
    .copied()
    .collect::<Vec<_>>())
        .await;
    let vm = cli.json(&["vm", "show", "tv"]).await;
    assert_eq!(vm["state"], "stopped", "{vm}");
    assert_eq!(
        (vm["cpus"].as_u64(), vm["memory_mib"].as_u64()),
        (Some(1), Some(160))
    );
    assert_eq!(vm["nics"].as_array().map(Vec::len), Some(1), "{vm}");
    assert_eq!(vm["disk"]["kind"], "library");
    assert_eq!(vm["disk"]["item"], "tv");
    let item = cli.json(&["library", "show", "tv"]).await;
    assert_eq!(item["format"], "qcow2");
    cli.ok(&["vm", "start", "tv"]).await;
    let mut shell = GuestShell::open(&cli, "tv").await;
    // The imported disk is the guest's vda and holds the tiny guest's ext4 file system (its
    // superblock magic 0xEF53 at byte 1080).
    assert!(
        shell
            .succeeds(
                "dd if=/dev/vda bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | grep -q '53 ef'",
                Duration::from_secs(30),
            )
            .await,
        "vda is the imported disk:\n{}",
        shell.output()
    );
    shell.detach().await;
    cli.ok(&["vm", "stop", "tv"]).await;

    // OVA (OVF + streamOptimized VMDK + SHA-256 manifest) -> an item and a hardware profile.
    qemu_img_convert(
        &guest.rootfs_qcow2,
        &packages.join("appl-1.vmdk"),
        "vmdk",
        &["-o", "subformat=streamOptimized"],
    );
    std::fs::write(packages.join("appl.ovf"), tiny_ovf("appl-1.vmdk")).expect("ovf");
    let manifest = run_in(
        &packages,
        "sha256sum",
        &["--tag", "appl.ovf", "appl-1.vmdk"],
    );
    std::fs::write(packages.join("appl.mf"), manifest.replace(") = ", ")= ")).expect("mf");
    run_in(
        &packages,
        "tar",
        &["-cf", "appl.ova", "appl.ovf", "appl.mf", "appl-1.vmdk"],
    );
    cli.ok(&[
        "library",
        "import",
        &packages.join("appl.ova").display().to_string(),
    ])
    .await;
    let profile = cli.json(&["profile", "hardware", "show", "appl"]).await;
    assert_eq!(profile["cpus"], 1);
    assert_eq!(profile["memory_mib"], 160);
    assert_eq!(profile["nics"], serde_json::json!(["user"]));
    assert_eq!(profile["data_disks"], serde_json::json!([32 << 20]));

    // Bad packages: malformed OVF, a digest that does not match, a disk the OVF names but the
    // OVA lacks. Each fails with its code and leaves no item, profile, VM or file.
    std::fs::write(packages.join("broken.ovf"), "<Envelope><References>").expect("ovf");
    run_in(
        &packages,
        "tar",
        &["-cf", "broken.ova", "broken.ovf", "appl-1.vmdk"],
    );
    std::fs::write(
        packages.join("liar.mf"),
        format!("SHA256(appl-1.vmdk)= {}\n", "0".repeat(64)),
    )
    .expect("mf");
    run_in(
        &packages,
        "tar",
        &["-cf", "liar.ova", "appl.ovf", "liar.mf", "appl-1.vmdk"],
    );
    run_in(&packages, "tar", &["-cf", "hollow.ova", "appl.ovf"]);
    for (package, code) in [
        ("broken.ova", "package_invalid"),
        ("liar.ova", "package_digest_mismatch"),
        ("hollow.ova", "package_invalid"),
    ] {
        let source = packages.join(package).display().to_string();
        cli.fails(&["library", "import", &source, "--name", "bad"], code)
            .await;
        cli.fails(&["v2v", "import", &source, "--name", "bad"], code)
            .await;
    }
    let items = cli.json(&["library", "list"]).await;
    assert_eq!(names_of(&items), ["appl", "tv"]);
    let profiles = cli.json(&["profile", "hardware", "list"]).await;
    assert_eq!(names_of(&profiles), ["appl"]);
    let vms = cli.json(&["vm", "list"]).await;
    assert_eq!(names_of(&vms), ["tv"]);
    assert_eq!(
        dir_names(&share),
        ["appl.qcow2", "tv.qcow2"],
        "no partial or unpacked files"
    );

    // A hardware profile applied in full: two NICs, a 64 MiB data disk, boot order, machine.
    cli.ok(&[
        "profile",
        "hardware",
        "create",
        "hw2",
        "--memory",
        "160M",
        "--data-disk",
        "64M",
        "--nic",
        "user",
        "--nic",
        "user",
        "--boot-order",
        "disk,network",
        "--machine",
        "pc",
    ]
    .iter()
    .chain(&direct_boot)
    .copied()
    .collect::<Vec<_>>())
        .await;
    cli.ok(&[
        "template",
        "create",
        "tpl",
        "--disk",
        "appl",
        "--hardware",
        "hw2",
    ])
    .await;
    cli.ok(&[
        "vm",
        "create",
        "tvm",
        "--template",
        "tpl",
        "--host",
        "h1",
        "--start",
    ])
    .await;
    let vm = cli.json(&["vm", "show", "tvm"]).await;
    assert_eq!(vm["nics"].as_array().map(Vec::len), Some(2), "{vm}");
    let mut shell = GuestShell::open(&cli, "tvm").await;
    for check in [
        "grep -qx 131072 /sys/block/vdb/size",
        "test -e /sys/class/net/eth1",
    ] {
        assert!(
            shell.succeeds(check, Duration::from_secs(30)).await,
            "{check}:\n{}",
            shell.output()
        );
    }
    shell.detach().await;

    // Deletes: a profile that a template uses stays; VMs do not hold their template.
    let outcome = cli.run(&["profile", "hardware", "delete", "hw2"]).await;
    assert_eq!(outcome.code, 1);
    assert!(
        outcome.stderr.contains("profile_in_use") && outcome.stderr.contains("tpl"),
        "{}",
        outcome.stderr
    );
    cli.ok(&["template", "delete", "tpl"]).await;
    cli.ok(&["profile", "hardware", "delete", "hw2"]).await;
    cli.fails(&["template", "show", "tpl"], "template_not_found")
        .await;
    assert_eq!(
        cli.vm_field("tvm", "state").await.as_deref(),
        Some("running")
    );
    for name in ["tv", "tvm"] {
        cli.ok(&["vm", "delete", name]).await;
    }
}
