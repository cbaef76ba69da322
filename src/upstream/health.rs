//! The health of one configured upstream, shared by every child or connection made for it,
//! so `/readyz` and the logs tell the truth about it.

use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing started yet (isolated mode before the first session).
    Idle,
    Running,
    /// Down, being restarted; the last failure is kept.
    Restarting,
    /// Could not be started at all the last time it was tried.
    Failed,
}

#[derive(Debug)]
pub struct Health {
    pub name: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    last_error: Option<String>,
    restarts: u64,
    since: SystemTime,
}

impl Health {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                state: State::Idle,
                last_error: None,
                restarts: 0,
                since: SystemTime::now(),
            }),
        }
    }

    pub fn set(&self, state: State, error: Option<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state == State::Restarting {
            g.restarts += 1;
        }
        if g.state != state {
            g.since = SystemTime::now();
        }
        g.state = state;
        if error.is_some() {
            g.last_error = error;
        }
    }

    pub fn state(&self) -> State {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .clone()
    }

    /// Ready unless the last attempt to run it failed or it is down.
    pub fn ready(&self) -> bool {
        matches!(self.state(), State::Idle | State::Running)
    }

    pub fn report(&self) -> Value {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let state = match g.state {
            State::Idle => "idle",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Failed => "failed",
        };
        let since = g
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({
            "name": self.name,
            "state": state,
            "ready": matches!(g.state, State::Idle | State::Running),
            "restarts": g.restarts,
            "last_error": g.last_error,
            "since_unix": since,
        })
    }
}
