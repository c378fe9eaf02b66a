//! What can stop a chaos run before its history is checked.

use std::path::PathBuf;

/// Why a run could not be carried out. `Display` is the message the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The scenario could not be read.
    #[error("{0}")]
    Scenario(#[from] stormcell_harness::scenario::ScenarioError),
    /// A program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A setup or teardown command ran and failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command, as a person would type it.
        what: String,
        /// Its exit status and what it printed.
        detail: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something the run needs is missing or did not come up.
    #[error("{0}")]
    Setup(String),
    /// The history could not be written.
    #[error("cannot write the history: {0}")]
    History(#[from] serde_json::Error),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ChaosError>;

/// Wraps an I/O error with the path it is about.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let path = path.into();
    move |source| ChaosError::Io { path, source }
}
