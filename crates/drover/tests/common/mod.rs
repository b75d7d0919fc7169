//! Shared by the end-to-end tests: `drover` daemons as child processes (optionally inside a
//! network namespace), the CLI with its own configuration, and cleanup of QEMU processes that
//! outlive their agents.

#![allow(dead_code)] // each test binary uses part of these helpers

use drover_testkit::{wait_for_text, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// `drover`, run inside `netns` when one is given.
pub fn command(netns: Option<&str>) -> Command {
    match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, DROVER]);
            command
        }
        None => Command::new(DROVER),
    }
}

/// A port that was free a moment ago; daemons get fixed ports so that a restart keeps them.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// A daemon process, killed when dropped (also when a test fails).
pub struct Daemon {
    child: Option<Child>,
    pub stdout_log: PathBuf,
}

impl Daemon {
    pub fn spawn(artifacts: &Path, log_name: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_in(None, artifacts, log_name, args, &[])
    }

    pub fn spawn_with_env(
        artifacts: &Path,
        log_name: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Daemon {
        Daemon::spawn_in(None, artifacts, log_name, args, env)
    }

    /// Spawns the daemon, inside network namespace `netns` when one is given (`ip netns exec`
    /// execs it in place, so the child is the daemon itself).
    pub fn spawn_in(
        netns: Option<&str>,
        artifacts: &Path,
        log_name: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> Daemon {
        let mut command = command(netns);
        command.args(args);
        Daemon::spawn_command(command, artifacts, log_name, env)
    }

    /// Spawns the daemon with its data directory `dir` on a tmpfs of `size` (`128m`) mounted
    /// in a mount namespace of its own: the machine's mount table stays as it is, and the
    /// tmpfs goes away with the last process in the namespace. `unshare` and `sh` exec in
    /// place, so the child is the daemon itself; others see `dir` under
    /// [`Daemon::namespace_view`].
    pub fn spawn_on_tmpfs(
        artifacts: &Path,
        log_name: &str,
        args: &[&str],
        env: &[(&str, &Path)],
        dir: &Path,
        size: &str,
    ) -> Daemon {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@""#)
            .arg(dir)
            .args([size, DROVER])
            .args(args);
        Daemon::spawn_command(command, artifacts, log_name, env)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running daemon").id()
    }

    /// `path` as the daemon sees it, through its mount namespace (while it runs).
    pub fn namespace_view(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid()))
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    fn spawn_command(
        mut command: Command,
        artifacts: &Path,
        log_name: &str,
        env: &[(&str, &Path)],
    ) -> Daemon {
        let stdout_log = artifacts.join(format!("{log_name}.out"));
        let stdout = std::fs::File::create(&stdout_log).expect("create stdout log");
        let stderr =
            std::fs::File::create(artifacts.join(format!("{log_name}.log"))).expect("create log");
        let child = command
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
    pub async fn printed(&self, label: &str) -> String {
        let text = wait_for_text(&self.stdout_log, label, Duration::from_secs(60))
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .map(|value| value.trim().to_owned())
            .expect("the line is there")
    }

    pub fn stop(&mut self, signal: Signal) {
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
pub struct QemuReaper {
    pub agent_dirs: Vec<PathBuf>,
}

pub fn qemu_pids(agent_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(agent_dir.join("vms")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("qemu.pid")).ok())
        .filter_map(|text| text.trim().parse().ok())
        .collect()
}

pub fn alive(pid: i32) -> bool {
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
pub struct Cli {
    pub config_home: PathBuf,
    /// The network namespace the CLI runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The command line of an agent on 127.0.0.1 with the roles `host,library`, its data in `dir`, its
/// control port `port` and any free transfer port.
pub fn agent_args(dir: &Path, port: u16) -> Vec<String> {
    let (dir, port) = (dir.display().to_string(), port.to_string());
    [
        "agent",
        "--data-dir",
        &dir,
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

impl Cli {
    pub async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let output = tokio::process::Command::from(command(self.netns.as_deref()))
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

    pub async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_env(args, &[]).await
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let outcome = self.run(args).await;
        assert_eq!(
            outcome.code, 0,
            "drover {args:?} failed:\n{}\n{}",
            outcome.stdout, outcome.stderr
        );
        outcome.stdout
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let stdout = self.ok(&args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }

    /// A command that must fail with exit status 1, a message, a code and an action.
    pub async fn fails(&self, args: &[&str], code: &str) {
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

    pub async fn vm_field(&self, vm: &str, field: &str) -> Option<String> {
        let outcome = self.run(&["vm", "show", vm, "-o", "json"]).await;
        let vm: Value = serde_json::from_str(&outcome.stdout).ok()?;
        vm[field].as_str().map(str::to_owned)
    }

    pub async fn wait_vm_state(&self, vm: &str, state: &str, timeout: Duration) {
        wait_until(&format!("VM {vm} {state}"), timeout, async || {
            (self.vm_field(vm, "state").await.as_deref() == Some(state)).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    }

    pub async fn wait_host_state(&self, host: &str, state: &str, timeout: Duration) {
        wait_until(&format!("host {host} {state}"), timeout, async || {
            let outcome = self.run(&["host", "show", host, "-o", "json"]).await;
            let host: Value = serde_json::from_str(&outcome.stdout).ok()?;
            (host["state"] == state).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Cli {
    /// Logs in to the server `server` printed its first-start lines for, trusting its CA by the
    /// printed fingerprint.
    pub async fn login(&self, server: &Daemon, url: &str) {
        let password = server.printed("admin password:").await;
        let fingerprint = server.printed("ca fingerprint:").await;
        self.ok(&[
            "login",
            url,
            "--password",
            &password,
            "--trust-fingerprint",
            &fingerprint,
        ])
        .await;
    }

    /// Adds the agent at `address` as host `name` with the code it printed.
    pub async fn add_host(&self, agent: &Daemon, address: &str, name: &str) {
        let code = agent.printed("enrollment code:").await;
        self.ok(&["host", "add", address, "--code", &code, "--name", name])
            .await;
    }
}

impl Cli {
    /// Adds library share `main` on host h1 in directory `path`.
    pub async fn add_main_share(&self, path: &Path) {
        self.ok(&[
            "library",
            "share",
            "add",
            "main",
            "--server",
            "h1",
            "--path",
            &path.display().to_string(),
        ])
        .await;
    }

    /// Makes template `t1` of the tiny guest: its root disk imported as library item `tiny-root`,
    /// hardware profile `tiny` (1 vCPU, 160 MiB, a serial shell) with `hardware` options
    /// (`--nic NETWORK`, ...), and guest OS profile `web` naming guests after `hostname` (a
    /// pattern with `*`).
    pub async fn tiny_template(&self, hostname: &str, hardware: &[&str]) {
        let guest = drover_testkit::guest();
        self.ok(&[
            "library",
            "import",
            &guest.rootfs_qcow2.display().to_string(),
            "--name",
            "tiny-root",
        ])
        .await;
        let (kernel, initrd) = (
            guest.kernel.display().to_string(),
            guest.initrd.display().to_string(),
        );
        let mut args = vec![
            "profile",
            "hardware",
            "create",
            "tiny",
            "--cpus",
            "1",
            "--memory",
            "160M",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            "console=ttyS0 quiet tiny.shell=1",
        ];
        args.extend(hardware);
        self.ok(&args).await;
        self.ok(&[
            "profile",
            "guest-os",
            "create",
            "web",
            "--hostname",
            hostname,
        ])
        .await;
        self.ok(&[
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
    }
}

/// A root shell on a guest's serial console (the tiny guest with `tiny.shell=1`), through
/// `drover vm console` with piped stdin and stdout.
pub struct GuestShell {
    console: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    seen: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
    commands: u32,
}

impl GuestShell {
    /// Attaches and waits until the shell answers (the guest may still be booting).
    pub async fn open(cli: &Cli, vm: &str) -> GuestShell {
        let mut console = tokio::process::Command::from(command(cli.netns.as_deref()))
            .args(["vm", "console", vm])
            .env("XDG_CONFIG_HOME", &cli.config_home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn drover vm console");
        let stdin = console.stdin.take().expect("piped stdin");
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
        let mut shell = GuestShell {
            console,
            stdin,
            seen,
            reader,
            commands: 0,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !shell.contains("E2E42") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no E2E42 from the guest's shell; console output:\n{}",
                shell.output()
            );
            shell.type_line("echo E2E$((20+22))").await;
            let _ = wait_until("E2E42", Duration::from_secs(3), async || {
                shell.contains("E2E42").then_some(())
            })
            .await;
        }
        shell
    }

    fn contains(&self, marker: &str) -> bool {
        self.seen.lock().expect("not poisoned").contains(marker)
    }

    /// Everything the console printed so far.
    pub fn output(&self) -> String {
        self.seen.lock().expect("not poisoned").clone()
    }

    async fn type_line(&mut self, line: &str) {
        self.stdin
            .write_all(format!("\n{line}\n").as_bytes())
            .await
            .expect("type into the console");
    }

    /// Runs `command_line` in the guest's shell; whether it succeeded. The markers are computed
    /// by the shell, so the echo of the typed line never matches them.
    pub async fn succeeds(&mut self, command_line: &str, timeout: Duration) -> bool {
        self.commands += 1;
        let number = self.commands;
        let (good, bad) = (format!("OK{number}-42"), format!("NO{number}-42"));
        self.type_line(&format!(
            "if {command_line}; then echo OK{number}-$((40+2)); else echo NO{number}-$((40+2)); fi"
        ))
        .await;
        let outcome = wait_until(
            &format!("the answer to `{command_line}`"),
            timeout,
            async || {
                if self.contains(&good) {
                    Some(true)
                } else if self.contains(&bad) {
                    Some(false)
                } else {
                    None
                }
            },
        )
        .await;
        outcome.unwrap_or_else(|error| panic!("{error}; console output:\n{}", self.output()))
    }

    /// Detaches with Ctrl-] and checks that the console exits cleanly.
    pub async fn detach(mut self) {
        self.stdin.write_all(&[0x1d]).await.expect("send Ctrl-]");
        let status = tokio::time::timeout(Duration::from_secs(10), self.console.wait())
            .await
            .expect("the console detaches on Ctrl-]")
            .expect("console status");
        assert!(status.success(), "drover vm console exited with {status}");
        self.reader.abort();
    }
}

pub fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The body of `GET /` from 127.0.0.1:`port`, once it has `marker` (the guest's httpd may still
/// be starting: slirp accepts the connection and closes it while nothing listens inside).
pub async fn http_get_until(port: u16, marker: &str, timeout: Duration) -> String {
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
