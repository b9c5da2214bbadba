//! What a run did: every step with its result and duration, the exit
//! status (the first failed step's), as one document. It is printed
//! (`--json`), given to hooks on their stdin, and kept as one line of the
//! job log.

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
    Skipped,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Why a step failed, as an error says it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepError {
    pub kind: String,
    pub exit_code: i32,
    pub message: String,
    #[serde(default)]
    pub hints: Vec<String>,
}

impl From<&Error> for StepError {
    fn from(e: &Error) -> StepError {
        StepError {
            kind: e.kind().name().to_string(),
            exit_code: e.kind().exit_code(),
            message: e.message().to_string(),
            hints: e.hints().to_vec(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// backup, retention, prune, copy, copy retention, restore test,
    /// hook before, hook after, hook on_failure.
    pub step: String,
    /// What it acted on: a source, a repository, a command.
    pub target: String,
    pub result: Outcome,
    /// What it did, or why it was skipped.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub job: String,
    pub file: String,
    /// When the run began (RFC 3339, UTC).
    pub started: String,
    pub duration_s: f64,
    /// ok, failed, or interrupted (SIGTERM, Ctrl-C: the after hooks got
    /// the summary so far).
    pub result: String,
    pub exit_code: i32,
    pub steps: Vec<Step>,
}

impl Summary {
    pub fn new(job: &str, file: &str) -> Summary {
        Summary {
            job: job.to_string(),
            file: file.to_string(),
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            duration_s: 0.0,
            result: "running".into(),
            exit_code: 0,
            steps: Vec::new(),
        }
    }

    /// The first failed step, whose exit code the run's is.
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.result == Outcome::Failed)
    }

    /// Settles the result and exit code from the steps.
    pub fn finish(&mut self, duration_s: f64) {
        self.duration_s = duration_s;
        self.exit_code = self
            .first_failure()
            .map_or(0, |s| s.error.as_ref().map_or(1, |e| e.exit_code));
        self.result = if self.exit_code == 0 { "ok" } else { "failed" }.into();
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The summary as lines of text, one per step.
    pub fn text(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "job {} ({}): {}, started {}, {:.1}s{}",
            self.job,
            self.file,
            self.result,
            self.started,
            self.duration_s,
            if self.exit_code != 0 {
                format!(", exit {}", self.exit_code)
            } else {
                String::new()
            }
        )];
        let width = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
        for s in &self.steps {
            lines.push(format!(
                "  {:<7} {:<width$}  {}  {:.1}s  {}",
                s.result.name(),
                s.step,
                s.target,
                s.duration_s,
                s.detail
            ));
            if let Some(e) = &s.error {
                lines.push(format!("          error: {}", e.message));
                for h in &e.hints {
                    lines.push(format!("          hint: {h}"));
                }
            }
        }
        lines
    }
}
