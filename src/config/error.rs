//! Config errors: every one names where it came from (file, key path), the value, and the fix.

use std::fmt;
use std::path::PathBuf;

/// A config problem that a person can fix from the message alone.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the config came from, when there is one.
    pub file: Option<PathBuf>,
    /// Dotted key path, e.g. `mcp_servers.internal_api.tls.ca_cert`, or a CLI flag.
    pub key: String,
    /// What is wrong, including the offending value.
    pub problem: String,
    /// One line saying how to fix it.
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: None,
            key: key.into(),
            problem: problem.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn in_file(mut self, file: Option<PathBuf>) -> Self {
        if self.file.is_none() {
            self.file = file;
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.problem)?;
        } else {
            write!(f, "{}: {}", self.key, self.problem)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
