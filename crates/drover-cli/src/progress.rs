//! Commands that start a job: wait for it with a progress display (step name and %), or print
//! the job id at once with `--async`. The display draws only on a terminal.

use crate::CliError;
use crate::output::{OutputFormat, print_json};
use drover_api::{Job, JobStatus};
use drover_client::Client;
use indicatif::{ProgressBar, ProgressStyle};

/// `--async` of every command that starts a job.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct JobOptions {
    /// Print the job id and return at once instead of waiting for the job.
    #[arg(long = "async")]
    pub no_wait: bool,
}

/// What a job is doing now: its running step (with how far it has come, such as a transfer's
/// bytes and rate), else its description.
fn current_step(job: &Job) -> String {
    job.steps
        .iter()
        .find(|step| step.status == JobStatus::Running)
        .map(|step| match &step.detail {
            Some(detail) => format!("{}: {detail}", step.name),
            None => step.name.clone(),
        })
        .unwrap_or_else(|| job.description.clone())
}

/// Waits for `job` with a progress bar; answers the finished job, an error unless it completed.
pub async fn follow(client: &Client, job: &Job) -> Result<Job, CliError> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:70!} [{bar:30}] {pos:>3}%")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let finished = client
        .wait_for_job(job.id, |job| {
            bar.set_position(u64::from(job.progress));
            bar.set_message(current_step(job));
        })
        .await;
    bar.finish_and_clear();
    let finished = finished?;
    if finished.status == JobStatus::Completed {
        Ok(finished)
    } else {
        Err(CliError::Job(Box::new(finished)))
    }
}

/// The common end of every command that starts a job.
pub async fn finish(
    client: &Client,
    job: Job,
    options: JobOptions,
    output: OutputFormat,
) -> Result<(), CliError> {
    if options.no_wait {
        return match output {
            OutputFormat::Json => print_json(&job),
            OutputFormat::Table => {
                println!("{}", job.id);
                Ok(())
            }
        };
    }
    let finished = follow(client, &job).await;
    let shown = match &finished {
        Ok(job) => job,
        Err(CliError::Job(job)) => job.as_ref(),
        Err(_) => return finished.map(|_| ()),
    };
    match output {
        OutputFormat::Json => print_json(shown)?,
        OutputFormat::Table if finished.is_ok() => {
            println!("{}: {}", shown.description, shown.status)
        }
        OutputFormat::Table => {}
    }
    finished.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::{JobId, JobStep, JobTarget};

    #[test]
    fn the_progress_line_shows_the_running_step_and_its_detail() {
        let step = |name: &str, status, detail: Option<&str>| JobStep {
            name: name.to_owned(),
            status,
            detail: detail.map(str::to_owned),
            started_at: None,
            ended_at: None,
        };
        let mut job = Job {
            id: JobId::new(),
            kind: "vm.store".to_owned(),
            description: "Store VM a in library share main".to_owned(),
            target: JobTarget {
                kind: "vm".to_owned(),
                id: "a".to_owned(),
                name: "a".to_owned(),
            },
            status: JobStatus::Running,
            progress: 10,
            steps: vec![
                step(
                    "Copy the VM's disks to the library",
                    JobStatus::Running,
                    Some("40 MiB of 160 MiB at 32 MiB/s"),
                ),
                step("Record the VM as stored", JobStatus::Queued, None),
            ],
            error: None,
            owner: "admin".to_owned(),
            restarted_from: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            ended_at: None,
        };
        assert_eq!(
            current_step(&job),
            "Copy the VM's disks to the library: 40 MiB of 160 MiB at 32 MiB/s"
        );
        job.steps[0].status = JobStatus::Completed;
        job.steps[1].status = JobStatus::Running;
        assert_eq!(current_step(&job), "Record the VM as stored");
    }
}
