//! `drover-bench scale`: the control plane at 1,000 hosts and 20,000 VMs (issue 4, DESIGN.md
//! section 8). One server runs as a child process (so that its memory is its own) on SQLite;
//! this process runs the simulated agents, each on its own 127.0.0.1 port and enrolled through
//! the real HTTPS API, then measures placement, single-object GETs under load, full listings
//! and the server's memory, and prints the figures. Not a test: it asserts nothing.

use crate::stats::Samples;
use anyhow::{Context, bail};
use chrono::Utc;
use drover_api::page::PageRequest;
use drover_api::{HostState, Job, JobStatus, PlacementRequest, Vm, VmCreate, VmDisk, VmState};
use drover_client::{Client, VmFilter};
use drover_server::placement::Needs;
use drover_server::placement::rating::{self, Claimed, Demand, HostFacts, Policy};
use futures_util::future::join_all;
use rand::Rng;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    #[arg(long, default_value_t = 20_000)]
    vms: usize,
    /// How many of the VMs are created through the API (placed by the server, defined on their
    /// simulated agent); the rest are inserted into the database directly, for speed.
    #[arg(long, default_value_t = 500)]
    api_vms: usize,
    /// Seconds of single-object GETs at `--rate` requests a second.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 30)]
    rate: u32,
}

const PASSWORD: &str = "bench";
/// Requests in flight at once while loading hosts and VMs through the API.
const BATCH: usize = 50;
const VM_MIB: u64 = 64;

/// The measured server: prints its address, then runs until its stdin closes.
pub async fn serve(data_dir: PathBuf) -> anyhow::Result<()> {
    let config = crate::cluster::config(&[
        ("server.api_port", "0"),
        ("server.bind_address", "127.0.0.1"),
    ])?;
    raise_file_limit();
    let server = drover_server::start(drover_server::ServerOptions {
        data_dir,
        config,
        admin_password: Some(PASSWORD.to_owned()),
    })
    .await?;
    println!("{}", server.api_addr);
    std::io::stdout().flush()?;
    let mut stdin = tokio::io::stdin();
    let mut sink = tokio::io::sink();
    tokio::io::copy(&mut stdin, &mut sink).await?;
    server.shutdown().await;
    Ok(())
}

/// 1,000 agents and their server connections need a few thousand descriptors; the usual soft
/// limit is 1,024.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("warning: cannot raise the open-file limit: {error}");
            }
        }
        Err(error) => eprintln!("warning: cannot read the open-file limit: {error}"),
    }
}

/// The server child; ends it when dropped (its stdin closes, then a kill as a backstop).
struct ServerProcess {
    child: Child,
    address: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

fn start_server(data_dir: &Path) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let mut child = Command::new(exe)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the server process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("the server printed no address")?;
    let address = line.trim().to_owned();
    if address.is_empty() {
        let _ = child.kill();
        bail!("the server stopped before listening");
    }
    Ok(ServerProcess { child, address })
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or_default()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn finished(client: &Client, job: Job) -> anyhow::Result<Job> {
    let done = client.wait_for_job(job.id, |_| {}).await?;
    if done.status != JobStatus::Completed {
        bail!("job {} {}: {:?}", done.kind, done.status, done.error);
    }
    Ok(done)
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    raise_file_limit();
    let work = tempfile::tempdir().context("temp dir")?;
    let server_dir = work.path().join("server");
    let server = start_server(&server_dir)?;
    let ca_pem = std::fs::read_to_string(server_dir.join("pki/ca.pem")).context("CA")?;
    let url = format!("https://{}", server.address);
    let anonymous = Client::new(&url, None, &ca_pem)?;
    let login = anonymous.login("admin", PASSWORD, None).await?;
    let client = anonymous.with_token(login.token);
    println!("server pid {} on {url}", server.child.id());

    // Hosts: simulated agents in this process, enrolled through the API.
    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.hosts);
    for index in 0..args.hosts {
        let agent = drover_agent::start(drover_agent::AgentOptions {
            data_dir: work.path().join(format!("agents/{index}")),
            config: crate::cluster::config(&[
                ("agent.control_port", "0"),
                ("agent.transfer_port", "0"),
                ("agent.bind_address", "127.0.0.1"),
            ])?,
            driver: Arc::new(drover_hv::sim::SimDriver),
            enrollment_code: Some(format!("bench-code-{index}")),
            roles: vec!["host".to_owned()],
        })
        .await?;
        agents.push(agent);
    }
    println!(
        "started {} simulated agents in {:.1} s",
        agents.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    for (batch_index, batch) in agents.chunks(BATCH).enumerate() {
        let adds = batch.iter().enumerate().map(|(offset, agent)| {
            let index = batch_index * BATCH + offset;
            let add = drover_api::HostAdd {
                address: agent.control_addr.to_string(),
                enrollment_code: format!("bench-code-{index}"),
                name: Some(format!("sim{index:04}")),
                group: None,
            };
            let client = &client;
            async move { finished(client, client.add_host(&add).await?).await }
        });
        for outcome in join_all(adds).await {
            outcome?;
        }
    }
    let enroll_seconds = started.elapsed().as_secs_f64();
    println!(
        "enrolled {} hosts through the API in {enroll_seconds:.1} s ({:.1} ms each)",
        args.hosts,
        enroll_seconds * 1000.0 / args.hosts.max(1) as f64
    );

    // VMs: some through the API (placed, defined on their agent), the rest inserted directly.
    let api_vms = args.api_vms.min(args.vms);
    let started = Instant::now();
    for batch_start in (0..api_vms).step_by(BATCH) {
        let creates = (batch_start..(batch_start + BATCH).min(api_vms)).map(|index| {
            let create = VmCreate {
                name: format!("vm{index:05}"),
                host: None,
                group: None,
                cpus: 1,
                memory_mib: VM_MIB,
                disk: VmDisk::None,
                kernel: None,
                initrd: None,
                cmdline: None,
                start: false,
                networks: vec![],
                seed: None,
                devices: Default::default(),
            };
            let client = &client;
            async move { finished(client, client.create_vm(&create).await?).await }
        });
        for outcome in join_all(creates).await {
            outcome?;
        }
    }
    let api_seconds = started.elapsed().as_secs_f64();
    println!(
        "created {api_vms} VMs through the API (placed by rating) in {api_seconds:.1} s ({:.1} ms each)",
        api_seconds * 1000.0 / api_vms.max(1) as f64
    );
    let hosts = client.all_hosts().await?;
    let db = drover_server::db::Db::open(&server_dir.join("drover.db")).await?;
    let started = Instant::now();
    for index in api_vms..args.vms {
        let host = &hosts[index % hosts.len()];
        let now = Utc::now();
        let vm = Vm {
            id: drover_api::VmId::new(),
            name: format!("vm{index:05}"),
            host_id: host.id,
            host_name: host.name.clone(),
            state: VmState::Stopped,
            state_reason: None,
            cpus: 1,
            memory_mib: VM_MIB,
            disk: VmDisk::None,
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: vec![],
            port_forwards: vec![],
            devices: Default::default(),
            created_at: now,
            updated_at: now,
        };
        drover_server::db::vms::insert(&db, &vm).await?;
    }
    db.close().await;
    println!(
        "inserted {} VMs into the database directly in {:.1} s",
        args.vms - api_vms,
        started.elapsed().as_secs_f64()
    );
    let responding = client
        .all_hosts()
        .await?
        .iter()
        .filter(|host| host.state == HostState::Responding)
        .count();
    println!("{responding} of {} hosts Responding", hosts.len());

    // Rating one VM over every host, through the API and as the bare function.
    let request = PlacementRequest {
        cpus: Some(1),
        memory_mib: Some(256),
        disk_bytes: None,
        template: None,
        networks: Vec::new(),
        group: None,
        goal: drover_api::PlacementGoal::LoadBalance,
    };
    let mut samples = Vec::new();
    let mut rated = 0;
    for _ in 0..50 {
        let sent = Instant::now();
        rated = client.rate_placement(&request).await?.ratings.len();
        samples.push(sent.elapsed());
    }
    println!(
        "POST /placement/rate over {rated} hosts (HTTPS, every host's reasons in JSON): {}",
        Samples::new(samples).summary()
    );
    // The same rating as the server does it for a `vm create`, without HTTP and JSON: this
    // process opens the server's database (SQLite in WAL mode allows it) and calls the server's
    // placement code.
    let state = drover_server::AppState::open(&server_dir).await?;
    let server_needs = Needs {
        demand: Demand {
            cpus: 1,
            memory_mib: 256,
            disk_bytes: 0,
        },
        networks: &[],
    };
    let mut samples = Vec::new();
    for _ in 0..50 {
        let sent = Instant::now();
        rated = drover_server::placement::rate_group(&state, None, server_needs, request.goal)
            .await?
            .candidates
            .len();
        samples.push(sent.elapsed());
    }
    state.db.close().await;
    println!(
        "placement::rate_group over {rated} hosts (group tree, host figures and claims read from SQLite, rated, sorted): {}",
        Samples::new(samples).summary()
    );
    let facts: Vec<HostFacts> = hosts
        .iter()
        .map(|host| HostFacts {
            id: host.id,
            name: host.name.clone(),
            state: host.state,
            state_reason: None,
            cpus: host.cpus,
            memory_mib: host.memory_mib,
            memory_free_mib: host.memory_free_mib,
            disk_free_bytes: host.disk_free_bytes,
            cpu_load_percent: host.cpu_load_percent,
            claimed: Claimed {
                vms: 20,
                cpus: 20,
                memory_mib: 20 * VM_MIB,
                disk_bytes: 0,
            },
        })
        .collect();
    let policy = Policy {
        reserve_cpu_percent: 10,
        reserve_memory_mib: 256,
        reserve_disk_bytes: 1 << 30,
        weight_cpu: 1,
        weight_memory: 1,
        weight_disk: 1,
        weight_network: 1,
    };
    let demand = Demand {
        cpus: 1,
        memory_mib: 256,
        disk_bytes: 0,
    };
    let mut samples = Vec::new();
    for _ in 0..100 {
        let sent = Instant::now();
        let mut ratings: Vec<_> = facts
            .iter()
            .map(|host| rating::rate(host, &policy, &demand, request.goal))
            .collect();
        ratings.sort_by(rating::compare);
        samples.push(sent.elapsed());
    }
    println!(
        "rating function alone over {} hosts: {}",
        facts.len(),
        Samples::new(samples).summary()
    );

    // Single-object GETs at a steady rate (the load), each one timed.
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut ticker = tokio::time::interval(period);
    let total = u64::from(args.rate) * args.seconds;
    let mut pending = Vec::new();
    for _ in 0..total {
        ticker.tick().await;
        let (vm, host) = {
            let mut random = rand::rng();
            (
                format!("vm{:05}", random.random_range(0..args.vms)),
                hosts[random.random_range(0..hosts.len())].name.clone(),
            )
        };
        let client = client.clone();
        pending.push(tokio::spawn(async move {
            let sent = Instant::now();
            let vm_ok = client.vm(&vm).await.is_ok();
            let vm_time = sent.elapsed();
            let sent = Instant::now();
            let host_ok = client.host(&host).await.is_ok();
            (vm_time, vm_ok, sent.elapsed(), host_ok)
        }));
    }
    let mut vm_samples = Vec::new();
    let mut host_samples = Vec::new();
    let mut failures = 0;
    for outcome in join_all(pending).await {
        let (vm_time, vm_ok, host_time, host_ok) = outcome?;
        vm_samples.push(vm_time);
        host_samples.push(host_time);
        failures += usize::from(!vm_ok) + usize::from(!host_ok);
    }
    println!(
        "GET /vms/{{vm}} at {} requests/s (plus as many host GETs): {}",
        args.rate,
        Samples::new(vm_samples).summary()
    );
    println!(
        "GET /hosts/{{host}}: {}",
        Samples::new(host_samples).summary()
    );
    if failures > 0 {
        println!("  {failures} GETs failed");
    }

    // Every VM, page by page.
    let mut samples = Vec::new();
    let mut page_request = PageRequest {
        limit: Some(500),
        cursor: None,
    };
    let mut listed = 0;
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let page = client.list_vms(&VmFilter::default(), &page_request).await?;
        samples.push(sent.elapsed());
        listed += page.items.len();
        if page.next_cursor.is_none() {
            break;
        }
        page_request.cursor = page.next_cursor;
    }
    println!(
        "listed {listed} VMs in {} pages of 500 in {:.0} ms: per page {}",
        samples.len(),
        started.elapsed().as_secs_f64() * 1000.0,
        Samples::new(samples).summary()
    );

    let (rss, peak) = memory_mib(server.child.id());
    println!("server memory: {rss} MiB resident, {peak} MiB peak");
    let (own_rss, _) = memory_mib(std::process::id());
    println!(
        "(this process, with the {} agents: {own_rss} MiB)",
        agents.len()
    );

    for agent in agents {
        agent.shutdown().await;
    }
    drop(server);
    Ok(())
}
