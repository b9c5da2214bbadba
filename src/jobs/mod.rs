//! Backup jobs: the whole routine (backup, retention, copies, a restore
//! test, hooks around them) as one command and a timer, from a job file.
//!
//! Layers: the command line reads options and prints; this module reads
//! job files, runs the steps by calling the engine, and keeps the job's
//! lock and log; the engine does the work. Nothing here runs `platter`
//! itself.
//!
//! - `file`: the job file, read and checked (keys, permissions, hooks).
//! - `run`: the steps of one run and which still run after a failure.
//! - `hooks`: the user's commands, in their own process group, timed.
//! - `restore_test`: restore the newest snapshot to scratch and check it.
//! - `state`: the job lock and the job log on this machine.
//! - `summary`: what a run did, as one document.
//! - `schedule`: systemd units for a job.

pub mod file;
pub mod hooks;
pub mod restore_test;
pub mod run;
pub mod schedule;
pub mod state;
pub mod summary;
