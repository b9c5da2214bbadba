//! `platter jobs`: the last runs of each job, from the job logs.

use platter::jobs::state;
use platter::jobs::summary::Summary;

use super::{Context, output};

/// Show the last runs of each job: steps, results, durations
///
/// Read from the job logs in /var/lib/platter/jobs (PLATTER_STATE_DIR
/// names another folder), where `platter run` adds one line per run.
#[derive(clap::Args)]
pub struct Args {
    /// Only this job
    name: Option<String>,

    /// How many runs of each job
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    last: u64,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let names = match &args.name {
        Some(name) => {
            platter::jobs::file::check_name(name)?;
            vec![name.clone()]
        }
        None => state::logged_jobs()?,
    };
    let mut all = serde_json::Map::new();
    for name in &names {
        let runs = state::runs(name, args.last as usize)?;
        if ctx.json {
            all.insert(name.clone(), serde_json::Value::Array(runs));
            continue;
        }
        if runs.is_empty() {
            output::line(&format!("job {name}: no run logged"));
        }
        for run in runs {
            match serde_json::from_value::<Summary>(run) {
                Ok(summary) => summary.text().iter().for_each(|l| output::line(l)),
                Err(e) => output::warn(&format!(
                    "job {name}: a log line is not a run summary ({e})"
                )),
            }
        }
    }
    if ctx.json {
        output::json(&serde_json::json!({ "jobs": all }))?;
    } else if names.is_empty() {
        output::line(&format!(
            "no job has run yet (no log in {})",
            state::state_dir().display()
        ));
    }
    Ok(true)
}
