//! A backend that fails at a chosen step, for tests that must not depend
//! on timing: run a command once to count its steps, then once per step
//! with a fault there, and check what each left behind.
//!
//! A step is one call that reaches the store: a create, a commit, an open,
//! a listing, a removal, a `write_new`. `Fault::Fail` makes one step fail
//! with an I/O error (a full disk, a lost connection) and lets the command
//! go on; `Fault::Outage` makes that step and every later one fail as an
//! unreachable store does (transient errors, which say nothing about the
//! data); `Fault::Die` makes that step and every later one fail, as if the
//! process had died there: what it had not committed never reaches the
//! store.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Backend, NewFile, SharedBackend, StoredFile};
use crate::error::{Error, Result};
use crate::interrupt::Registration;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Commit,
    Open,
    List,
    Remove,
    WriteNew,
}

impl Step {
    /// The steps that change the store.
    pub fn writes(self) -> bool {
        matches!(self, Step::Commit | Step::Remove | Step::WriteNew)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This step fails; later ones work.
    Fail,
    /// This step and every later one fail: the process died here.
    Die,
    /// This step and every later one fail as a store out of reach fails
    /// (transient errors): the data is fine, only unreachable.
    Outage,
}

/// Where to fault: the `at`-th (from 0) step that `counts` takes.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub at: usize,
    pub counts: fn(Step) -> bool,
    pub fault: Fault,
}

/// Wraps a backend; records every step, faults the one its plan names.
pub struct FaultyBackend {
    inner: SharedBackend,
    state: Arc<State>,
}

/// What the backend and the files it hands out share.
struct State {
    plan: Option<FaultPlan>,
    counted: AtomicUsize,
    dead: AtomicBool,
    /// Whether later steps fail as an outage (transient).
    outage: AtomicBool,
    log: Mutex<Vec<(Step, String)>>,
}

impl FaultyBackend {
    pub fn new(inner: SharedBackend, plan: Option<FaultPlan>) -> Arc<FaultyBackend> {
        Arc::new(FaultyBackend {
            inner,
            state: Arc::new(State {
                plan,
                counted: AtomicUsize::new(0),
                dead: AtomicBool::new(false),
                outage: AtomicBool::new(false),
                log: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The steps taken so far, with the names they were on.
    pub fn steps(&self) -> Vec<(Step, String)> {
        self.state
            .log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// Whether the planned fault has struck.
    pub fn struck(&self) -> bool {
        let state = &self.state;
        state
            .plan
            .is_some_and(|plan| state.counted.load(Ordering::SeqCst) > plan.at)
    }

    fn step(&self, step: Step, name: &str) -> Result<()> {
        self.state.step(step, name)
    }

    fn new_file(&self, inner: Box<dyn NewFile>, name: &str) -> Box<dyn NewFile> {
        Box::new(FaultyNewFile {
            inner,
            state: Arc::clone(&self.state),
            name: name.to_string(),
        })
    }
}

impl State {
    /// Takes step `step` on `name`: an error if the plan faults it, or if
    /// the process "died" before.
    fn step(&self, step: Step, name: &str) -> Result<()> {
        if let Ok(mut log) = self.log.lock() {
            log.push((step, name.to_string()));
        }
        if self.outage.load(Ordering::SeqCst) {
            return Err(injected(step, name, "while the store is out of reach").transient());
        }
        if self.dead.load(Ordering::SeqCst) {
            return Err(injected(step, name, "after the process died"));
        }
        let Some(plan) = self.plan.filter(|plan| (plan.counts)(step)) else {
            return Ok(());
        };
        if self.counted.fetch_add(1, Ordering::SeqCst) != plan.at {
            return Ok(());
        }
        match plan.fault {
            Fault::Fail => Err(injected(step, name, "as planned")),
            Fault::Die => {
                self.dead.store(true, Ordering::SeqCst);
                Err(injected(step, name, "as planned"))
            }
            Fault::Outage => {
                self.outage.store(true, Ordering::SeqCst);
                Err(injected(step, name, "as the store went out of reach").transient())
            }
        }
    }
}

fn injected(step: Step, name: &str, when: &str) -> Error {
    Error::storage(
        &format!("{step:?} (fault injected {when})").to_lowercase(),
        name,
        io::Error::other("injected fault"),
    )
}

impl Backend for FaultyBackend {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.step(Step::Create, name)?;
        Ok(self.new_file(self.inner.create(name)?, name))
    }

    fn create_large(&self, name: &str) -> Result<Box<dyn NewFile>> {
        self.step(Step::Create, name)?;
        Ok(self.new_file(self.inner.create_large(name)?, name))
    }

    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>> {
        self.step(Step::Open, name)?;
        self.inner.open(name)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.step(Step::List, dir)?;
        self.inner.list(dir)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.step(Step::Remove, name)?;
        self.inner.remove(name)
    }

    fn remove_unfinished(&self, dir: &str, no_writers: bool) -> Result<Vec<String>> {
        self.step(Step::List, dir)?;
        self.inner.remove_unfinished(dir, no_writers)
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }

    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.step(Step::WriteNew, name)?;
        self.inner.write_new(name, bytes)
    }

    fn keeps_reserve(&self) -> bool {
        self.inner.keeps_reserve()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn pack_target(&self) -> Option<u64> {
        self.inner.pack_target()
    }

    fn read_span(&self) -> u64 {
        self.inner.read_span()
    }

    fn remove_on_interrupt(&self, name: &str) -> Option<Registration> {
        self.inner.remove_on_interrupt(name)
    }
}

/// A file being written through a faulty backend: its commit is a step.
/// Its writes are not: a failing write and a failing commit look alike to
/// every caller.
struct FaultyNewFile {
    inner: Box<dyn NewFile>,
    state: Arc<State>,
    name: String,
}

impl Write for FaultyNewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl NewFile for FaultyNewFile {
    fn commit(self: Box<Self>) -> Result<()> {
        self.state.step(Step::Commit, &self.name)?;
        self.inner.commit()
    }
}
