//! `drover job list|show|watch|cancel|restart`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish, follow};
use drover_api::page::PageRequest;
use drover_api::{Job, JobId, JobStatus};
use drover_client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCommand {
    /// Recent jobs, newest first.
    List {
        /// Only jobs in this status (queued, running, completed, failed, canceled).
        #[arg(long, value_parser = parse_status)]
        status: Option<JobStatus>,
        /// How many jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A job's steps, progress, status and error.
    Show { id: JobId },
    /// Follow a job until it ends; exits 1 unless it completed.
    Watch { id: JobId },
    /// Cancel a queued job, or a running migration.
    Cancel { id: JobId },
    /// Run a failed or canceled job again.
    Restart {
        id: JobId,
        #[command(flatten)]
        job: JobOptions,
    },
}

fn parse_status(text: &str) -> Result<JobStatus, String> {
    JobStatus::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
        let known: Vec<&str> = JobStatus::ALL
            .iter()
            .map(|status| status.as_str())
            .collect();
        format!("unknown status '{text}'; use one of {}", known.join(", "))
    })
}

fn print_job(job: &Job) {
    let mut fields = vec![
        ("Job", job.id.to_string()),
        ("Kind", job.kind.clone()),
        ("Description", job.description.clone()),
        (
            "Target",
            format!(
                "{} {} ({})",
                job.target.kind, job.target.name, job.target.id
            ),
        ),
        ("Status", job.status.to_string()),
        ("Progress", format!("{}%", job.progress)),
        ("Owner", job.owner.clone()),
        ("Created", time(&job.created_at)),
    ];
    if let Some(started) = &job.started_at {
        fields.push(("Started", time(started)));
    }
    if let Some(ended) = &job.ended_at {
        fields.push(("Ended", time(ended)));
    }
    if let Some(from) = &job.restarted_from {
        fields.push(("Restart of", from.to_string()));
    }
    if let Some(error) = &job.error {
        fields.push(("Error", error.message.clone()));
        fields.push(("Error code", error.code.clone()));
        fields.push(("Action", error.action.clone()));
    }
    print_fields(&fields);
    if !job.steps.is_empty() {
        println!();
        let mut table = Table::new(&["STEP", "STATUS", "DETAIL"]);
        for step in &job.steps {
            table.row(vec![
                step.name.clone(),
                step.status.to_string(),
                step.detail.clone().unwrap_or_default(),
            ]);
        }
        table.print();
    }
}

pub async fn run(
    client: &Client,
    command: &JobCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        JobCommand::List { status, limit } => {
            let page = PageRequest {
                limit: Some(*limit),
                cursor: None,
            };
            let jobs = client.list_jobs(*status, &page).await?.items;
            if output == OutputFormat::Json {
                return print_json(&jobs);
            }
            let mut table = Table::new(&["ID", "KIND", "STATUS", "PROGRESS", "TARGET", "CREATED"]);
            for job in &jobs {
                table.row(vec![
                    job.id.to_string(),
                    job.kind.clone(),
                    job.status.to_string(),
                    format!("{}%", job.progress),
                    job.target.name.clone(),
                    time(&job.created_at),
                ]);
            }
            table.print();
            Ok(())
        }
        JobCommand::Show { id } => {
            let job = client.job(*id).await?;
            match output {
                OutputFormat::Json => print_json(&job),
                OutputFormat::Table => {
                    print_job(&job);
                    Ok(())
                }
            }
        }
        JobCommand::Watch { id } => {
            let job = client.job(*id).await?;
            let finished = follow(client, &job).await;
            let shown = match &finished {
                Ok(job) => job,
                Err(CliError::Job(job)) => job.as_ref(),
                Err(_) => return finished.map(|_| ()),
            };
            match output {
                OutputFormat::Json => print_json(shown)?,
                OutputFormat::Table => print_job(shown),
            }
            finished.map(|_| ())
        }
        JobCommand::Cancel { id } => {
            let job = client.cancel_job(*id).await?;
            match output {
                OutputFormat::Json => print_json(&job),
                OutputFormat::Table => {
                    println!("{}: {}", job.description, job.status);
                    Ok(())
                }
            }
        }
        JobCommand::Restart { id, job } => {
            let started = client.restart_job(*id).await?;
            finish(client, started, *job, output).await
        }
    }
}
