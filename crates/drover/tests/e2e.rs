//! End-to-end tests: `drover server` and `drover agent`s run as separate processes on
//! 127.0.0.1 with real QEMU (the tiny guest, TCG), and everything is driven through the `drover`
//! CLI binary, as a user would. Daemon logs go to `target/test-artifacts/<test>/`.

use drover_testkit::{artifacts_dir, guest, wait_for_text, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// A port that was free a moment ago; daemons get fixed ports so that a restart keeps them.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// A daemon process, killed when dropped (also when a test fails).
struct Daemon {
    child: Option<Child>,
    stdout_log: PathBuf,
}

impl Daemon {
    fn spawn(artifacts: &Path, log_name: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_with_env(artifacts, log_name, args, &[])
    }

    fn spawn_with_env(
        artifacts: &Path,
        log_name: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Daemon {
        let stdout_log = artifacts.join(format!("{log_name}.out"));
        let stdout = std::fs::File::create(&stdout_log).expect("create stdout log");
        let stderr =
            std::fs::File::create(artifacts.join(format!("{log_name}.log"))).expect("create log");
        let child = Command::new(DROVER)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("DROVER_DATA_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn drover daemon");
        Daemon {
            child: Some(child),
            stdout_log,
        }
    }

    /// The value of the `label: value` line the daemon prints at start.
    async fn printed(&self, label: &str) -> String {
        let text = wait_for_text(&self.stdout_log, label, Duration::from_secs(60))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .map(|value| value.trim().to_owned())
            .expect("the line is there")
    }

    fn stop(&mut self, signal: Signal) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), signal);
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Signal::SIGKILL);
    }
}

/// QEMU runs outside the agents' process trees: kill what the agents' data dirs name, so that a
/// failed test leaves no VM behind.
struct QemuReaper {
    agent_dirs: Vec<PathBuf>,
}

fn qemu_pids(agent_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(agent_dir.join("vms")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("qemu.pid")).ok())
        .filter_map(|text| text.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.contains(") Z "))
}

impl Drop for QemuReaper {
    fn drop(&mut self) {
        for dir in &self.agent_dirs {
            for pid in qemu_pids(dir) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// The CLI with its own configuration directory.
#[derive(Clone)]
struct Cli {
    config_home: PathBuf,
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let output = tokio::process::Command::new(DROVER)
            .args(args)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("DROVER_URL")
            .env_remove("DROVER_TOKEN")
            .env_remove("DROVER_CA")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run drover");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_env(args, &[]).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let outcome = self.run(args).await;
        assert_eq!(
            outcome.code, 0,
            "drover {args:?} failed:\n{}\n{}",
            outcome.stdout, outcome.stderr
        );
        outcome.stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let stdout = self.ok(&args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }

    /// A command that must fail with exit status 1, a message, a code and an action.
    async fn fails(&self, args: &[&str], code: &str) {
        let outcome = self.run(args).await;
        assert_eq!(outcome.code, 1, "drover {args:?}: {}", outcome.stderr);
        assert!(outcome.stderr.starts_with("error: "), "{}", outcome.stderr);
        assert!(
            outcome.stderr.contains(&format!("code: {code}")),
            "{}",
            outcome.stderr
        );
        assert!(outcome.stderr.contains("action: "), "{}", outcome.stderr);
    }

    async fn vm_field(&self, vm: &str, field: &str) -> Option<String> {
        let outcome = self.run(&["vm", "show", vm, "-o", "json"]).await;
        let vm: Value = serde_json::from_str(&outcome.stdout).ok()?;
        vm[field].as_str().map(str::to_owned)
    }

    async fn wait_vm_state(&self, vm: &str, state: &str, timeout: Duration) {
        wait_until(&format!("VM {vm} {state}"), timeout, async || {
            (self.vm_field(vm, "state").await.as_deref() == Some(state)).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    }

    async fn wait_host_state(&self, host: &str, state: &str, timeout: Duration) {
        wait_until(&format!("host {host} {state}"), timeout, async || {
            let outcome = self.run(&["host", "show", host, "-o", "json"]).await;
            let host: Value = serde_json::from_str(&outcome.stdout).ok()?;
            (host["state"] == state).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    }
}

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
            "--transfer-port",
            "0",
            "--roles",
            "host,library",
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
        let password = cluster.server.printed("admin password:").await;
        let fingerprint = cluster.server.printed("ca fingerprint:").await;
        cluster
            .cli
            .ok(&[
                "login",
                &cluster.url(),
                "--password",
                &password,
                "--trust-fingerprint",
                &fingerprint,
            ])
            .await;
        for (index, (agent, port, _)) in cluster.agents.iter().enumerate() {
            let code = agent.printed("enrollment code:").await;
            let address = format!("127.0.0.1:{port}");
            let name = format!("h{}", index + 1);
            cluster
                .cli
                .ok(&["host", "add", &address, "--code", &code, "--name", &name])
                .await;
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

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
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

/// Attaches `drover vm console` with piped stdin and stdout, types a command into the guest's
/// shell until its answer shows, then detaches with Ctrl-].
async fn console_round_trip(cli: &Cli, vm: &str) {
    let mut console = tokio::process::Command::new(DROVER)
        .args(["vm", "console", vm])
        .env("XDG_CONFIG_HOME", &cli.config_home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn drover vm console");
    let mut stdin = console.stdin.take().expect("piped stdin");
    let mut stdout = console.stdout.take().expect("piped stdout");
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(count) = stdout.read(&mut buffer).await {
                if count == 0 {
                    break;
                }
                let mut seen = seen.lock().expect("not poisoned");
                seen.push_str(&String::from_utf8_lossy(&buffer[..count]));
            }
        })
    };
    // The guest may still be booting: ask again until the shell answers.
    let contains = |marker: &str| seen.lock().expect("not poisoned").contains(marker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !contains("E2E42") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no E2E42 from the guest's shell; console output:\n{}",
            seen.lock().expect("not poisoned")
        );
        stdin
            .write_all(b"\necho E2E$((20+22))\n")
            .await
            .expect("type into the console");
        let _ = wait_until("E2E42", Duration::from_secs(3), async || {
            contains("E2E42").then_some(())
        })
        .await;
    }
    stdin.write_all(&[0x1d]).await.expect("send Ctrl-]");
    let status = tokio::time::timeout(Duration::from_secs(10), console.wait())
        .await
        .expect("the console detaches on Ctrl-]")
        .expect("console status");
    assert!(status.success(), "drover vm console exited with {status}");
    reader.abort();
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
    cli.ok(&["vm", "start", "demo"]).await;
    cli.wait_vm_state("demo", "running", Duration::from_secs(10))
        .await;
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
            "1G",
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
    cli.ok(&[
        "library",
        "share",
        "add",
        "main",
        "--server",
        "h1",
        "--path",
        &share_path,
    ])
    .await;
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
    let mut files: Vec<String> = std::fs::read_dir(&share_dir)
        .expect("share")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(files, ["appliance.qcow2"]);

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

/// Library on h1, VMs on h2: the template's disk goes from h1's transfer port to h2's cache once
/// (agent to agent), and each VM is an overlay on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_from_a_template_are_linked_clones_of_a_disk_fetched_once() {
    let cluster = Cluster::start("e2e_template", 2).await;
    let cli = cluster.cli.clone();
    let guest = guest();
    let share = cluster.root.join("library");
    cli.ok(&[
        "library",
        "share",
        "add",
        "main",
        "--server",
        "h1",
        "--path",
        &share.display().to_string(),
    ])
    .await;
    cli.ok(&[
        "library",
        "import",
        &guest.rootfs_qcow2.display().to_string(),
        "--name",
        "tiny-root",
    ])
    .await;
    cli.ok(&[
        "profile",
        "hardware",
        "create",
        "tiny",
        "--cpus",
        "1",
        "--memory",
        "160M",
        "--kernel",
        &guest.kernel.display().to_string(),
        "--initrd",
        &guest.initrd.display().to_string(),
        "--cmdline",
        "console=ttyS0 quiet tiny.shell=1",
    ])
    .await;
    cli.fails(
        &["profile", "hardware", "create", "tiny", "--memory", "16M"],
        "invalid_profile",
    )
    .await;
    cli.ok(&[
        "profile",
        "guest-os",
        "create",
        "web",
        "--hostname",
        "web-**",
    ])
    .await;
    cli.fails(
        &["profile", "guest-os", "create", "bad", "--hostname", "a_b"],
        "invalid_profile",
    )
    .await;
    cli.ok(&[
        "template",
        "create",
        "t1",
        "--disk",
        "tiny-root",
        "--hardware",
        "tiny",
        "--guest-os",
        "web",
    ])
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
        let text = wait_for_text(&serial, "TINYVM-HOSTNAME web-", Duration::from_secs(60))
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
