//! Live migration end to end: a server and agents as separate processes on 127.0.0.1, real QEMU
//! (the tiny guest, TCG), driven through the `drover` CLI. A running VM moves with its disk and
//! keeps ticking and answering on its forwarded port; a canceled migration, a destination agent
//! killed mid-mirror, a destination whose disk fills up mid-mirror (a tmpfs in the agent's own
//! mount namespace) and a destination without room leave the VM running on its source and
//! nothing on the destination; a paused VM's move canceled or cut by a destination agent kill
//! mid-copy leaves it paused on its source; a quick migration outlives a source agent restart;
//! maintenance mode evacuates a host. Paused and saved VMs move with
//! their memory, data disks move every way a VM moves, checkpoints go with a stopped VM, and a
//! server killed mid-migration leaves the VM on exactly one host.

mod common;

use common::{
    Cli, Daemon, GuestShell, QemuReaper, agent_args, alive, as_strs, free_port, http_get_until,
    qemu_pids,
};
use drover_testkit::{artifacts_dir, guest, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

/// One agent: its process, control port and data directory.
struct Agent {
    daemon: Daemon,
    port: u16,
    dir: PathBuf,
}

/// A server with agents `h1`, `h2`, ... added as hosts.
struct Site {
    // Fields drop in this order: the reaper must read the QEMU pid files before the daemons go
    // and before the temporary directory is removed.
    _reaper: QemuReaper,
    artifacts: PathBuf,
    root: PathBuf,
    server: Daemon,
    /// The server's command line, to start it again.
    server_args: Vec<String>,
    agents: Vec<Agent>,
    cli: Cli,
    _temp: tempfile::TempDir,
}

impl Site {
    /// A server (with `server_env`) and `agent_count` agents, their data under the site's root.
    async fn start(test: &str, server_env: &[(&str, &Path)], agent_count: usize) -> Site {
        let artifacts = artifacts_dir(test);
        let temp = tempfile::tempdir().expect("temp dir");
        let root = temp.path().to_owned();
        let api_port = free_port();
        let server_dir = root.join("server").display().to_string();
        let api = api_port.to_string();
        let server_args = [
            "server",
            "--data-dir",
            &server_dir,
            "--api-port",
            &api,
            "--bind-address",
            "127.0.0.1",
        ]
        .map(str::to_owned)
        .to_vec();
        let server =
            Daemon::spawn_with_env(&artifacts, "server", &as_strs(&server_args), server_env);
        let agents: Vec<Agent> = (0..agent_count)
            .map(|index| {
                let dir = root.join(format!("agent{}", index + 1));
                let port = free_port();
                let daemon = Daemon::spawn(
                    &artifacts,
                    &format!("agent{}", index + 1),
                    &as_strs(&agent_args(&dir, port)),
                );
                Agent { daemon, port, dir }
            })
            .collect();
        let cli = Cli {
            config_home: root.join("config"),
            netns: None,
        };
        cli.login(&server, &format!("https://127.0.0.1:{api_port}"))
            .await;
        for (index, agent) in agents.iter().enumerate() {
            let address = format!("127.0.0.1:{}", agent.port);
            cli.add_host(&agent.daemon, &address, &format!("h{}", index + 1))
                .await;
        }
        Site {
            _reaper: QemuReaper {
                agent_dirs: agents.iter().map(|agent| agent.dir.clone()).collect(),
            },
            _temp: temp,
            artifacts,
            root,
            server,
            server_args,
            agents,
            cli,
        }
    }

    /// Kills the server (no chance to finish anything) and starts it again on its data.
    async fn restart_server(&mut self, log_name: &str) {
        self.server.stop(Signal::SIGKILL);
        self.server = Daemon::spawn(&self.artifacts, log_name, &as_strs(&self.server_args));
        wait_until("the restarted server answers", LONG, async || {
            self.cli
                .run(&["host", "list"])
                .await
                .code
                .eq(&0)
                .then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Adds an agent (as host `hN`, the next number) whose data directory is a tmpfs of `size`
    /// in a mount namespace of its own, its incoming migrations on `migration_ports` (`A-B`).
    /// Its [`Agent::dir`] is the tmpfs as the test sees it, through the agent's namespace.
    async fn add_agent_on_tmpfs(&mut self, size: &str, migration_ports: &str) {
        let number = self.agents.len() + 1;
        let dir = self.root.join(format!("agent{number}"));
        let port = free_port();
        let daemon = Daemon::spawn_on_tmpfs(
            &self.artifacts,
            &format!("agent{number}"),
            &as_strs(&agent_args(&dir, port)),
            &[("DROVER_AGENT_MIGRATION_PORTS", Path::new(migration_ports))],
            &dir,
            size,
        );
        let dir = daemon.namespace_view(&dir);
        self.cli
            .add_host(&daemon, &format!("127.0.0.1:{port}"), &format!("h{number}"))
            .await;
        self._reaper.agent_dirs.push(dir.clone());
        self.agents.push(Agent { daemon, port, dir });
    }

    /// Kills agent `host` (no chance to finish anything) and starts it again on its data with
    /// `env`; waits until its host answers.
    async fn restart_agent(&mut self, host: usize, log_name: &str, env: &[(&str, &Path)]) {
        let agent = &mut self.agents[host - 1];
        agent.daemon.stop(Signal::SIGKILL);
        agent.daemon = Daemon::spawn_with_env(
            &self.artifacts,
            log_name,
            &as_strs(&agent_args(&agent.dir, agent.port)),
            env,
        );
        self.cli
            .wait_host_state(&format!("h{host}"), "responding", LONG)
            .await;
    }

    fn agent_dir(&self, host: usize) -> &Path {
        &self.agents[host - 1].dir
    }

    /// Creates and starts a ticking tiny guest with a shell and a blank disk on `host`.
    async fn ticking_vm(&self, name: &str, host: &str) -> String {
        self.ticking_vm_on_disk(name, host, &["--disk", "64M"])
            .await
    }

    /// As [`Site::ticking_vm`], with the disk given by `disk` (`--disk SIZE`, `--image FILE`).
    async fn ticking_vm_on_disk(&self, name: &str, host: &str, disk: &[&str]) -> String {
        let guest = guest();
        let mut args = vec![
            "vm", "create", name, "--host", host, "--cpus", "1", "--memory", "128M",
        ];
        args.extend(disk);
        self.cli
            .ok(&[
                args.as_slice(),
                &[
                    "--kernel",
                    &guest.kernel.display().to_string(),
                    "--initrd",
                    &guest.initrd.display().to_string(),
                    "--cmdline",
                    "console=ttyS0 quiet tiny.shell=1 tiny.tick=1",
                    "--start",
                ],
            ]
            .concat())
            .await;
        self.cli.vm_field(name, "id").await.expect("the VM's id")
    }
}

/// The guest's serial log on `agent_dir`'s host.
fn serial_log(agent_dir: &Path, vm_id: &str) -> String {
    std::fs::read_to_string(agent_dir.join("vms").join(vm_id).join("serial.log"))
        .unwrap_or_default()
}

/// Waits until the guest has printed more ticks on that host than `seen`.
async fn ticks_on(agent_dir: &Path, vm_id: &str, seen: usize) -> usize {
    wait_until("the guest ticks on", LONG, async || {
        let count = serial_log(agent_dir, vm_id).matches("TINYVM-TICK").count();
        (count > seen).then_some(count)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Waits for two more ticks from the guest on that host than it has printed so far.
async fn keeps_ticking(agent_dir: &Path, vm_id: &str) {
    let seen = serial_log(agent_dir, vm_id).matches("TINYVM-TICK").count();
    ticks_on(agent_dir, vm_id, seen + 1).await;
}

/// Nothing of the VM on the host: no directory, no QEMU.
fn nothing_on(agent_dir: &Path, vm_id: &str) {
    assert!(
        !agent_dir.join("vms").join(vm_id).exists(),
        "the VM's directory is still on {}",
        agent_dir.display()
    );
    assert!(
        qemu_pids(agent_dir).iter().all(|pid| !alive(*pid)),
        "a QEMU still runs for {}",
        agent_dir.display()
    );
}

/// Checks in the guest that the marker written before the move is on its disk, read past the
/// guest's page cache.
async fn marker_on_disk(cli: &Cli, vm: &str) {
    marker_on(cli, vm, "/dev/vda").await;
}

/// As [`marker_on_disk`], on the guest's disk `device`.
async fn marker_on(cli: &Cli, vm: &str, device: &str) {
    let mut shell = GuestShell::open(cli, vm).await;
    assert!(
        shell
            .succeeds(
                &format!("sync && echo 3 > /proc/sys/vm/drop_caches && dd if={device} bs=512 skip=2048 count=1 2>/dev/null | grep -q DROVER-MOVED-42"),
                Duration::from_secs(30),
            )
            .await,
        "the marker written before the move is on {device}"
    );
    shell.detach().await;
}

/// Writes the marker [`marker_on`] looks for onto the guest's disk `device`.
async fn write_marker(cli: &Cli, vm: &str, device: &str) {
    let mut shell = GuestShell::open(cli, vm).await;
    assert!(
        shell
            .succeeds(
                &format!("echo DROVER-MOVED-$((6*7)) > /tmp/m && dd if=/tmp/m of={device} bs=512 seek=2048 count=1 conv=fsync 2>/dev/null"),
                Duration::from_secs(30),
            )
            .await,
        "the marker is written to {device}"
    );
    shell.detach().await;
}

/// Writes 24 MiB of random data to the guest's disk: at 1 MiB/s its mirror takes long enough to
/// be hit.
async fn fill_disk(cli: &Cli, vm: &str) {
    let mut shell = GuestShell::open(cli, vm).await;
    assert!(
        shell
            .succeeds(
                "dd if=/dev/urandom of=/dev/vda bs=1M count=24 conv=fsync 2>/dev/null",
                Duration::from_secs(120),
            )
            .await
    );
    shell.detach().await;
}

/// Starts a migration with `options` without waiting; its job id.
async fn start_migration(cli: &Cli, vm: &str, to: &str, options: &[&str]) -> String {
    let job = cli
        .json(&[&["vm", "migrate", vm, "--to", to, "--async"], options].concat())
        .await;
    job["id"].as_str().expect("a job id").to_owned()
}

/// Starts a migration whose disk mirror is throttled to 1 MiB/s, without waiting; its job id.
async fn start_slow_migration(cli: &Cli, vm: &str, to: &str) -> String {
    start_migration(cli, vm, to, &["--mirror-speed", "1048576"]).await
}

async fn job(cli: &Cli, id: &str) -> Value {
    cli.json(&["job", "show", id]).await
}

/// Waits until the job's copy step shows some of the disk mirrored.
async fn wait_mirroring(cli: &Cli, id: &str) {
    wait_until("the disk mirror under way", LONG, async || {
        let job = job(cli, id).await;
        job["steps"]
            .as_array()?
            .iter()
            .filter_map(|step| step["detail"].as_str())
            .any(|detail| detail.starts_with("disk ") && !detail.starts_with("disk 0/"))
            .then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

async fn wait_job_status(cli: &Cli, id: &str, status: &str) -> Value {
    wait_until(&format!("job {id} {status}"), LONG, async || {
        let job = job(cli, id).await;
        (job["status"] == status).then_some(job)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_moves_live_with_its_disk_and_port_forward() {
    let site = Site::start(
        "a_running_vm_moves_live_with_its_disk_and_port_forward",
        &[],
        2,
    )
    .await;
    let cli = &site.cli;
    let vm_id = site.ticking_vm("mover", "h1").await;
    let port = free_port();
    cli.ok(&["vm", "port-forward", "mover", &format!("{port}:80")])
        .await;
    http_get_until(port, "tinyvm says hello", LONG).await;
    write_marker(cli, "mover", "/dev/vda").await;

    let finished = cli.json(&["vm", "migrate", "mover", "--to", "h2"]).await;
    assert_eq!(finished["status"], "completed", "{finished:#}");
    let copy = finished["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["name"] == "Copy disk and memory while the VM runs")
        .expect("the copy step");
    let figures = copy["detail"].as_str().expect("the copy's figures");
    assert!(
        figures.contains("disk 64/64 MiB mirrored") && figures.contains("downtime"),
        "{figures}"
    );
    let vm = cli.json(&["vm", "show", "mover"]).await;
    assert_eq!(
        (vm["host_name"].as_str(), vm["state"].as_str()),
        (Some("h2"), Some("running"))
    );

    keeps_ticking(site.agent_dir(2), &vm_id).await;
    nothing_on(site.agent_dir(1), &vm_id);
    http_get_until(port, "tinyvm says hello", LONG).await;
    marker_on_disk(cli, "mover").await;

    // Back without --to: placement picks the only other host.
    let back = cli.json(&["vm", "migrate", "mover"]).await;
    assert_eq!(back["status"], "completed", "{back:#}");
    assert_eq!(
        cli.vm_field("mover", "host_name").await.as_deref(),
        Some("h1")
    );
    nothing_on(site.agent_dir(2), &vm_id);
    cli.fails(
        &["vm", "migrate", "mover", "--to", "h1"],
        "invalid_migration_target",
    )
    .await;

    // Stopped, it moves by quick migration: its files, fetched by h2 from h1's transfer port.
    cli.ok(&["vm", "stop", "mover"]).await;
    let quick = cli.json(&["vm", "migrate", "mover", "--to", "h2"]).await;
    assert_eq!(quick["status"], "completed", "{quick:#}");
    let vm = cli.json(&["vm", "show", "mover"]).await;
    assert_eq!(
        (vm["host_name"].as_str(), vm["state"].as_str()),
        (Some("h2"), Some("stopped"))
    );
    nothing_on(site.agent_dir(1), &vm_id);
    cli.ok(&["vm", "start", "mover"]).await;
    marker_on_disk(cli, "mover").await;
}

/// The numbers of the ticks the guest printed on that host, in order.
fn tick_numbers(agent_dir: &Path, vm_id: &str) -> Vec<u64> {
    serial_log(agent_dir, vm_id)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("TINYVM-TICK "))
        .filter_map(|number| number.trim().parse().ok())
        .collect()
}

/// The number of the last tick the guest printed on that host.
fn last_tick(agent_dir: &Path, vm_id: &str) -> Option<u64> {
    tick_numbers(agent_dir, vm_id).last().copied()
}

/// Waits until the guest on that host prints a tick numbered after `before`: the same guest
/// goes on (a rebooted one would count from 0 again).
async fn ticks_on_after(agent_dir: &Path, vm_id: &str, before: u64) {
    wait_until("the guest ticks on where it was", LONG, async || {
        last_tick(agent_dir, vm_id).filter(|tick| *tick > before)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vm_moves_with_its_memory_and_a_saved_one_stays_saved() {
    let site = Site::start(
        "a_paused_vm_moves_with_its_memory_and_a_saved_one_stays_saved",
        &[],
        2,
    )
    .await;
    let cli = &site.cli;
    let vm_id = site.ticking_vm("sleeper", "h1").await;
    keeps_ticking(site.agent_dir(1), &vm_id).await;
    cli.ok(&["vm", "pause", "sleeper"]).await;
    let paused_at = last_tick(site.agent_dir(1), &vm_id).expect("ticks before the pause");

    let moved = cli.json(&["vm", "migrate", "sleeper", "--to", "h2"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    let steps: Vec<&str> = moved["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| step["name"].as_str())
        .collect();
    assert!(steps.contains(&"Save the paused VM's memory"), "{steps:?}");
    let vm = cli.json(&["vm", "show", "sleeper"]).await;
    assert_eq!(
        (vm["host_name"].as_str(), vm["state"].as_str()),
        (Some("h2"), Some("paused"))
    );
    nothing_on(site.agent_dir(1), &vm_id);
    let destination = site.agent_dir(2).join("vms").join(&vm_id);
    assert!(
        !destination.join("saved.state").exists(),
        "the destination continued the guest from its saved state"
    );
    let pids = qemu_pids(site.agent_dir(2));
    assert!(
        pids.iter().any(|pid| alive(*pid)),
        "a paused guest has its QEMU on the destination"
    );
    cli.ok(&["vm", "resume", "sleeper"]).await;
    ticks_on_after(site.agent_dir(2), &vm_id, paused_at).await;

    // Saved, it moves as it is and goes on from its saved state where it lands.
    cli.ok(&["vm", "save", "sleeper"]).await;
    let saved_at = last_tick(site.agent_dir(2), &vm_id).expect("ticks before the save");
    let moved = cli.json(&["vm", "migrate", "sleeper", "--to", "h1"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    let vm = cli.json(&["vm", "show", "sleeper"]).await;
    assert_eq!(
        (vm["host_name"].as_str(), vm["state"].as_str()),
        (Some("h1"), Some("saved"))
    );
    nothing_on(site.agent_dir(2), &vm_id);
    cli.ok(&["vm", "start", "sleeper"]).await;
    ticks_on_after(site.agent_dir(1), &vm_id, saved_at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_canceled_migrations_leave_the_vm_on_its_source() {
    let mut site = Site::start(
        "failed_and_canceled_migrations_leave_the_vm_on_its_source",
        &[],
        2,
    )
    .await;
    // h3's data directory is a 160 MiB tmpfs: under the 1 GiB reserve plus the 64 MiB disk.
    site.add_agent_on_tmpfs("160m", "47300-47301").await;
    let vm_id = site.ticking_vm("stayer", "h1").await;
    fill_disk(&site.cli, "stayer").await;
    let cli = site.cli.clone();

    // Canceled mid-mirror.
    let id = start_slow_migration(&cli, "stayer", "h2").await;
    wait_mirroring(&cli, &id).await;
    cli.ok(&["job", "cancel", &id]).await;
    let canceled = wait_job_status(&cli, &id, "canceled").await;
    assert_eq!(canceled["error"]["code"], "job_canceled", "{canceled:#}");
    cli.wait_vm_state("stayer", "running", LONG).await;
    assert_eq!(
        cli.vm_field("stayer", "host_name").await.as_deref(),
        Some("h1")
    );
    nothing_on(site.agent_dir(2), &vm_id);
    keeps_ticking(site.agent_dir(1), &vm_id).await;

    // The destination agent killed mid-mirror: its QEMU goes on receiving, but nobody resumes
    // the guest there, so the source takes it back.
    let id = start_slow_migration(&cli, "stayer", "h2").await;
    wait_mirroring(&cli, &id).await;
    let waiting_pid: i32 =
        std::fs::read_to_string(site.agent_dir(2).join("vms").join(&vm_id).join("qemu.pid"))
            .expect("the destination's QEMU")
            .trim()
            .parse()
            .expect("a pid");
    site.agents[1].daemon.stop(Signal::SIGKILL);
    let failed = wait_job_status(&cli, &id, "failed").await;
    assert_eq!(failed["error"]["code"], "migration_failed", "{failed:#}");
    cli.wait_vm_state("stayer", "running", LONG).await;
    assert_eq!(
        cli.vm_field("stayer", "host_name").await.as_deref(),
        Some("h1")
    );
    keeps_ticking(site.agent_dir(1), &vm_id).await;
    // Back up, the agent removes what the unfinished migration left.
    site.restart_agent(2, "agent2-2", &[]).await;
    nothing_on(site.agent_dir(2), &vm_id);
    assert!(!alive(waiting_pid), "the destination's QEMU was ended");

    // No room on the destination: refused before anything starts.
    cli.fails(
        &["vm", "migrate", "stayer", "--to", "h3"],
        "insufficient_host_resources",
    )
    .await;
    nothing_on(site.agent_dir(3), &vm_id);
    assert_eq!(
        cli.vm_field("stayer", "state").await.as_deref(),
        Some("running")
    );
    let _ = &site.root;
}

/// The migration ports of the agent whose disk fills up.
const CRAMPED_PORTS: std::ops::RangeInclusive<u16> = 47310..=47311;

/// Fills the file system of `dir` to its last byte, with the file `dir/filler`.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(dir.join("filler")).expect("create the filler");
    let chunk = vec![0xa5_u8; 1 << 20];
    for _ in 0..1024 {
        if let Err(error) = filler.write_all(&chunk) {
            assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
            return;
        }
    }
    panic!("1 GiB written and {} still has room", dir.display());
}

/// Whether something listens on (or holds) `port` on 127.0.0.1.
fn port_taken(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// The processes in `daemon`'s mount namespace other than the daemon itself: what it started.
fn namespace_mates(daemon: &Daemon) -> Vec<u32> {
    let namespace = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let own = namespace(daemon.pid()).expect("the daemon's mount namespace");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != daemon.pid() && alive(*pid as i32))
        .filter(|pid| namespace(*pid).as_ref() == Some(&own))
        .collect()
}

/// The destination's disk fills up while the VM's disk is mirrored there: QEMU's writes to the
/// copy fail, the migration fails saying so, and the VM runs on at its source with nothing of
/// it left on the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_out_of_disk_mid_mirror_leaves_the_vm_on_its_source() {
    let mut site = Site::start(
        "a_destination_out_of_disk_mid_mirror_leaves_the_vm_on_its_source",
        &[],
        1,
    )
    .await;
    // h2's data directory is a 256 MiB tmpfs: room for the 64 MiB disk and above the 128 MiB a
    // host keeps free to stay healthy, once no disk reserve is kept back; until the test fills
    // the rest.
    site.cli
        .ok(&["hostgroup", "set", "All Hosts", "--reserve-disk", "0"])
        .await;
    let ports = CRAMPED_PORTS;
    site.add_agent_on_tmpfs("256m", &format!("{}-{}", ports.start(), ports.end()))
        .await;
    let vm_id = site.ticking_vm("cramped", "h1").await;
    fill_disk(&site.cli, "cramped").await;
    let cli = &site.cli;

    let id = start_slow_migration(cli, "cramped", "h2").await;
    wait_mirroring(cli, &id).await;
    assert!(
        ports.clone().all(port_taken),
        "the destination's QEMU listens on {ports:?}"
    );
    fill_up(site.agent_dir(2));
    let failed = wait_job_status(cli, &id, "failed").await;
    assert_eq!(failed["error"]["code"], "migration_failed", "{failed:#}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left on device"),
        "the error says the destination ran out of space: {failed:#}"
    );
    let action = failed["error"]["action"].as_str().unwrap_or_default();
    assert!(action.contains("free disk space"), "{failed:#}");
    placed_on(cli, "cramped", "h1", "running").await;
    keeps_ticking(site.agent_dir(1), &vm_id).await;
    gone_from(site.agent_dir(2), &vm_id).await;
    let destination = &site.agents[1].daemon;
    assert_eq!(
        namespace_mates(destination),
        Vec::<u32>::new(),
        "no QEMU left on the destination"
    );
    assert!(
        !ports.clone().any(port_taken),
        "the destination's migration ports {ports:?} are free again"
    );
}

/// The rate the source agent sends files at in the tests that stop a quick migration mid-copy.
const PACED_RATE: &str = "2M";

/// Restarts agent `host` sending files at [`PACED_RATE`], so that a copy lasts long enough to
/// be hit.
async fn pace_agent(site: &mut Site, host: usize, log_name: &str) {
    site.restart_agent(
        host,
        log_name,
        &[("DROVER_AGENT_TRANSFER_RATE_LIMIT", Path::new(PACED_RATE))],
    )
    .await;
}

/// Waits until the job's file copy has moved some bytes.
async fn wait_copying(cli: &Cli, id: &str) {
    wait_until("the file copy under way", LONG, async || {
        let job = job(cli, id).await;
        let copy = job["steps"]
            .as_array()?
            .iter()
            .find(|step| step["name"] == "Copy the VM's files to the destination")?;
        let detail = copy["detail"].as_str()?;
        (copy["status"] == "running" && !detail.starts_with("0 ")).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

/// A paused VM on h1 whose quick migration to h2 copies its files (h1 sends them slowly).
struct PausedMove {
    site: Site,
    vm: &'static str,
    vm_id: String,
    /// The last tick the guest printed before its pause.
    paused_at: u64,
    job_id: String,
}

impl PausedMove {
    async fn start(test: &str, vm: &'static str) -> PausedMove {
        let mut site = Site::start(test, &[], 2).await;
        pace_agent(&mut site, 1, "agent1-paced").await;
        let vm_id = site.ticking_vm(vm, "h1").await;
        fill_disk(&site.cli, vm).await;
        keeps_ticking(site.agent_dir(1), &vm_id).await;
        site.cli.ok(&["vm", "pause", vm]).await;
        let paused_at = last_tick(site.agent_dir(1), &vm_id).expect("ticks before the pause");
        let job_id = start_migration(&site.cli, vm, "h2", &[]).await;
        wait_copying(&site.cli, &job_id).await;
        PausedMove {
            site,
            vm,
            vm_id,
            paused_at,
            job_id,
        }
    }

    /// The VM is paused on h1 with its memory (resumed, its tick count goes on) and nothing of
    /// it is left on h2.
    async fn paused_on_its_source(&self) {
        let (site, vm_id) = (&self.site, &self.vm_id);
        placed_on(&site.cli, self.vm, "h1", "paused").await;
        gone_from(site.agent_dir(2), vm_id).await;
        assert!(
            qemu_pids(site.agent_dir(1)).iter().any(|pid| alive(*pid)),
            "the paused guest has its QEMU on the source again"
        );
        let held = last_tick(site.agent_dir(1), vm_id);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            last_tick(site.agent_dir(1), vm_id),
            held,
            "the guest stays paused"
        );
        site.cli.ok(&["vm", "resume", self.vm]).await;
        ticks_on_after(site.agent_dir(1), vm_id, self.paused_at).await;
    }
}

/// A paused VM's quick migration canceled mid-copy leaves it paused on its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vms_move_canceled_mid_copy_leaves_it_paused_on_its_source() {
    let moving = PausedMove::start(
        "a_paused_vms_move_canceled_mid_copy_leaves_it_paused_on_its_source",
        "napper",
    )
    .await;
    let cli = &moving.site.cli;
    cli.ok(&["job", "cancel", &moving.job_id]).await;
    let canceled = wait_job_status(cli, &moving.job_id, "canceled").await;
    assert_eq!(canceled["error"]["code"], "job_canceled", "{canceled:#}");
    moving.paused_on_its_source().await;
}

/// A paused VM's quick migration whose destination agent is killed mid-copy fails and leaves
/// it paused on its source; the destination agent, back up, holds nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vms_move_cut_by_a_destination_kill_leaves_it_paused_on_its_source() {
    let mut moving = PausedMove::start(
        "a_paused_vms_move_cut_by_a_destination_kill_leaves_it_paused_on_its_source",
        "dozer",
    )
    .await;
    moving.site.agents[1].daemon.stop(Signal::SIGKILL);
    let failed = wait_job_status(&moving.site.cli, &moving.job_id, "failed").await;
    assert_eq!(failed["error"]["code"], "host_unreachable", "{failed:#}");
    moving.site.restart_agent(2, "agent2-2", &[]).await;
    moving.paused_on_its_source().await;
}

/// The source agent killed and started again mid-copy: the destination fetches the rest from
/// the restarted agent and the stopped VM's quick migration completes, its disk whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_migration_outlives_a_source_agent_restart_mid_copy() {
    let mut site = Site::start(
        "a_quick_migration_outlives_a_source_agent_restart_mid_copy",
        &[],
        2,
    )
    .await;
    pace_agent(&mut site, 1, "agent1-paced").await;
    let vm_id = site.ticking_vm("traveler", "h1").await;
    fill_disk(&site.cli, "traveler").await;
    write_marker(&site.cli, "traveler", "/dev/vda").await;
    let cli = site.cli.clone();
    cli.ok(&["vm", "stop", "traveler"]).await;

    let id = start_migration(&cli, "traveler", "h2", &[]).await;
    wait_copying(&cli, &id).await;
    pace_agent(&mut site, 1, "agent1-restarted").await;
    let moved = wait_job_status(&cli, &id, "completed").await;
    let copy = moved["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["name"] == "Copy the VM's files to the destination")
        .expect("the copy step");
    assert_eq!(copy["status"], "completed", "{moved:#}");
    placed_on(&cli, "traveler", "h2", "stopped").await;
    nothing_on(site.agent_dir(1), &vm_id);
    cli.ok(&["vm", "start", "traveler"]).await;
    marker_on_disk(&cli, "traveler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_on_evacuates_running_vms_and_leaves_stopped_ones() {
    let site = Site::start(
        "maintenance_on_evacuates_running_vms_and_leaves_stopped_ones",
        // One migration per host at a time: the second VM waits for its turn.
        &[("DROVER_SERVER_MIGRATIONS_PER_HOST", Path::new("1"))],
        3,
    )
    .await;
    let cli = &site.cli;
    let first = site.ticking_vm("first", "h1").await;
    let second = site.ticking_vm("second", "h1").await;
    site.ticking_vm("resting", "h1").await;
    cli.ok(&["vm", "stop", "resting"]).await;

    let job = cli.json(&["host", "maintenance", "on", "h1"]).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    let outcome = job["steps"][1]["detail"]
        .as_str()
        .expect("each VM's outcome");
    assert!(
        outcome.contains("first: moved") && outcome.contains("second: moved"),
        "{outcome}"
    );
    for (name, vm_id) in [("first", &first), ("second", &second)] {
        let host = cli.vm_field(name, "host_name").await.expect("a host");
        assert!(host == "h2" || host == "h3", "{name} went to {host}");
        assert_eq!(
            cli.vm_field(name, "state").await.as_deref(),
            Some("running")
        );
        let index: usize = host[1..].parse().expect("h2 or h3");
        ticks_on(site.agent_dir(index), vm_id, 0).await;
        assert!(!site.agent_dir(1).join("vms").join(vm_id).exists());
    }
    let jobs = cli.json(&["job", "list"]).await;
    let migrations: Vec<&Value> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|job| job["kind"] == "vm.migrate")
        .collect();
    assert_eq!(migrations.len(), 2, "{jobs:#}");
    assert!(
        migrations.iter().any(|job| job["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|step| step["detail"].as_str())
            .any(|detail| detail.contains("busy with other migrations"))),
        "one migration waited for the other: {migrations:#?}"
    );
    assert_eq!(
        cli.vm_field("resting", "host_name").await.as_deref(),
        Some("h1")
    );
    assert_eq!(
        cli.vm_field("resting", "state").await.as_deref(),
        Some("stopped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_clone_moves_its_own_blocks_over_the_same_base() {
    let site = Site::start(
        "a_linked_clone_moves_its_own_blocks_over_the_same_base",
        &[],
        2,
    )
    .await;
    let cli = &site.cli;
    let base = guest().rootfs_qcow2.display().to_string();
    let vm_id = site
        .ticking_vm_on_disk("clone", "h1", &["--image", &base])
        .await;
    write_marker(cli, "clone", "/dev/vda").await;
    let moved = cli.json(&["vm", "migrate", "clone", "--to", "h2"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    keeps_ticking(site.agent_dir(2), &vm_id).await;
    marker_on_disk(cli, "clone").await;
    // The destination's disk is an overlay on the same base, not a flattened copy.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(
            site.agent_dir(2)
                .join("vms")
                .join(&vm_id)
                .join("disk.qcow2"),
        )
        .output()
        .expect("qemu-img info");
    let info: Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(base.as_str()),
        "{info:#}"
    );
    nothing_on(site.agent_dir(1), &vm_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_a_data_disk_moves_it_live_stopped_and_through_the_library() {
    let site = Site::start(
        "a_vm_with_a_data_disk_moves_it_live_stopped_and_through_the_library",
        &[],
        2,
    )
    .await;
    let cli = &site.cli;
    // `vm create` has no flag for data disks; the API takes them.
    let login = drover_cli::credentials::load(&cli.config_home.join("drover")).expect("login");
    let ca = drover_cli::credentials::load_ca(&cli.config_home.join("drover"))
        .expect("ca")
        .expect("a pinned CA");
    let client =
        drover_client::Client::new(&login.url.expect("url"), login.token, &ca).expect("client");
    let guest = guest();
    let create = drover_api::VmCreate {
        name: "wide".to_owned(),
        host: Some("h1".to_owned()),
        group: None,
        cpus: 1,
        memory_mib: 128,
        disk: drover_api::VmDisk::Blank {
            size_bytes: 64 << 20,
        },
        kernel: Some(guest.kernel.display().to_string()),
        initrd: Some(guest.initrd.display().to_string()),
        cmdline: Some("console=ttyS0 quiet tiny.shell=1 tiny.tick=1".to_owned()),
        start: true,
        networks: Vec::new(),
        seed: None,
        devices: drover_api::VmDevices {
            data_disks: vec![drover_api::VmDisk::Blank {
                size_bytes: 32 << 20,
            }],
            ..drover_api::VmDevices::default()
        },
    };
    let job = client.create_vm(&create).await.expect("create");
    cli.ok(&["job", "watch", &job.id.to_string()]).await;
    cli.wait_vm_state("wide", "running", LONG).await;
    let vm_id = cli.vm_field("wide", "id").await.expect("the VM's id");
    write_marker(cli, "wide", "/dev/vdb").await;

    let moved = cli.json(&["vm", "migrate", "wide", "--to", "h2"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    let figures = moved["steps"][2]["detail"].as_str().unwrap_or_default();
    assert!(figures.contains("disk 96/96 MiB mirrored"), "{figures}");
    keeps_ticking(site.agent_dir(2), &vm_id).await;
    nothing_on(site.agent_dir(1), &vm_id);
    marker_on(cli, "wide", "/dev/vdb").await;

    cli.ok(&["vm", "stop", "wide"]).await;
    let quick = cli.json(&["vm", "migrate", "wide", "--to", "h1"]).await;
    assert_eq!(quick["status"], "completed", "{quick:#}");
    assert!(
        site.agent_dir(1)
            .join("vms")
            .join(&vm_id)
            .join("disk1.qcow2")
            .exists(),
        "the data disk moved"
    );
    nothing_on(site.agent_dir(2), &vm_id);
    cli.ok(&["vm", "start", "wide"]).await;
    marker_on(cli, "wide", "/dev/vdb").await;

    // Stored in the library and deployed to the other host, the data disk goes along.
    cli.ok(&["vm", "stop", "wide"]).await;
    let share = site.root.join("library");
    cli.add_main_share(&share).await;
    cli.ok(&["vm", "store", "wide"]).await;
    let stored = share.join(".stored-vms").join(&vm_id);
    assert!(
        stored.join("disk1.qcow2").exists(),
        "the library holds the data disk"
    );
    cli.ok(&["vm", "deploy", "wide", "--host", "h2"]).await;
    assert!(!stored.exists(), "the library keeps nothing");
    cli.ok(&["vm", "start", "wide"]).await;
    marker_on(cli, "wide", "/dev/vdb").await;
}

/// Waits until nothing of the VM is left on that host.
async fn gone_from(agent_dir: &Path, vm_id: &str) {
    wait_until("the host has let go of the VM", LONG, async || {
        let gone = !agent_dir.join("vms").join(vm_id).exists()
            && qemu_pids(agent_dir).iter().all(|pid| !alive(*pid));
        gone.then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    nothing_on(agent_dir, vm_id);
}

/// Waits until the database names `host` as the VM's host, in `state`.
async fn placed_on(cli: &Cli, vm: &str, host: &str, state: &str) {
    wait_until(&format!("{vm} {state} on {host}"), LONG, async || {
        let shown = cli.json(&["vm", "show", vm]).await;
        (shown["host_name"] == host && shown["state"] == state).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_migration_leaves_the_vm_on_exactly_one_host() {
    let mut site = Site::start(
        "a_server_restart_mid_migration_leaves_the_vm_on_exactly_one_host",
        &[],
        2,
    )
    .await;
    let vm_id = site.ticking_vm("survivor", "h1").await;
    fill_disk(&site.cli, "survivor").await;
    let cli = site.cli.clone();

    // The server dies mid-mirror and stays down while the agents finish the move: back up, it
    // finds the guest running on the destination and makes that the VM's host.
    let id = start_slow_migration(&cli, "survivor", "h2").await;
    wait_mirroring(&cli, &id).await;
    site.server.stop(Signal::SIGKILL);
    ticks_on(site.agent_dir(2), &vm_id, 0).await;
    site.restart_server("server-2").await;
    let failed = wait_job_status(&cli, &id, "failed").await;
    assert_eq!(failed["error"]["code"], "server_restarted", "{failed:#}");
    placed_on(&cli, "survivor", "h2", "running").await;
    gone_from(site.agent_dir(1), &vm_id).await;
    keeps_ticking(site.agent_dir(2), &vm_id).await;

    // The server restarts mid-mirror: the copy is canceled and the VM stays on its source.
    let id = start_slow_migration(&cli, "survivor", "h1").await;
    wait_mirroring(&cli, &id).await;
    site.restart_server("server-3").await;
    wait_job_status(&cli, &id, "failed").await;
    gone_from(site.agent_dir(1), &vm_id).await;
    placed_on(&cli, "survivor", "h2", "running").await;
    keeps_ticking(site.agent_dir(2), &vm_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_refuse_a_live_move_and_go_with_a_stopped_one() {
    let site = Site::start(
        "checkpoints_refuse_a_live_move_and_go_with_a_stopped_one",
        &[],
        2,
    )
    .await;
    let cli = &site.cli;
    let vm_id = site.ticking_vm("keeper", "h1").await;
    ticks_on_after(site.agent_dir(1), &vm_id, 2).await;
    let before_checkpoint = last_tick(site.agent_dir(1), &vm_id).expect("ticks");
    cli.ok(&["vm", "checkpoint", "create", "keeper", "--name", "c1"])
        .await;
    cli.fails(&["vm", "migrate", "keeper", "--to", "h2"], "vm_not_movable")
        .await;

    cli.ok(&["vm", "stop", "keeper"]).await;
    let moved = cli.json(&["vm", "migrate", "keeper", "--to", "h2"]).await;
    assert_eq!(moved["status"], "completed", "{moved:#}");
    nothing_on(site.agent_dir(1), &vm_id);
    let listed = cli.json(&["vm", "checkpoint", "list", "keeper"]).await;
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["name"],
            &listed[0]["with_memory"],
            &listed[0]["on_host"]
        ),
        (&Value::from("c1"), &Value::from(true), &Value::from(true)),
        "{listed:?}"
    );
    // Restored on the destination, the guest goes on from the checkpoint's memory: its first
    // tick there continues the count (a booted guest would start from 0).
    cli.ok(&["vm", "checkpoint", "restore", "keeper", "c1"])
        .await;
    assert_eq!(
        cli.vm_field("keeper", "state").await.as_deref(),
        Some("running")
    );
    ticks_on(site.agent_dir(2), &vm_id, 0).await;
    let first = tick_numbers(site.agent_dir(2), &vm_id)[0];
    assert!(
        first >= before_checkpoint,
        "the count goes on from {before_checkpoint}: first tick {first}"
    );
}
