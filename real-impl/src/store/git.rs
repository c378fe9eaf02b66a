//! Running the `git` binary: one place that builds commands with a clean environment and
//! turns failures into store errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use stormcell_model::error::StoreError;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How to run `git`.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    /// Extra environment for commands that talk to peers (their credential headers).
    peer_env: Vec<(String, String)>,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Whether it exited with status 0.
    pub success: bool,
}

impl Git {
    /// Runs `program`; commands that fetch from peers present `device` and `credential`.
    pub fn new(program: PathBuf, device: &str, credential: &str) -> Self {
        // Given through the environment rather than the command line, so the credential
        // does not show in process listings.
        let peer_env = vec![
            ("GIT_CONFIG_COUNT".to_owned(), "2".to_owned()),
            ("GIT_CONFIG_KEY_0".to_owned(), "http.extraHeader".to_owned()),
            (
                "GIT_CONFIG_VALUE_0".to_owned(),
                format!("{}: {device}", crate::http::auth::PEER_DEVICE_HEADER),
            ),
            ("GIT_CONFIG_KEY_1".to_owned(), "http.extraHeader".to_owned()),
            (
                "GIT_CONFIG_VALUE_1".to_owned(),
                format!(
                    "{}: {credential}",
                    crate::http::auth::PEER_CREDENTIAL_HEADER
                ),
            ),
        ];
        Git {
            program: program.clone(),
            peer_env,
        }
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// A command in `dir` with a predictable environment.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(dir)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_CONFIG_COUNT")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// A command that authenticates to peers.
    pub fn peer_command(&self, dir: &Path) -> Command {
        let mut cmd = self.command(dir);
        cmd.envs(self.peer_env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `cmd`, feeding it `input`, and collects its output.
    pub async fn run(&self, mut cmd: Command, input: &[u8]) -> Result<Output, StoreError> {
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StoreError(format!("cannot run {}: {e}", self.program.display())))?;
        let stdin = child.stdin.take();
        let input = input.to_vec();
        // Written concurrently with reading the output, so a large input cannot deadlock
        // against a child that answers while it reads.
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A child that exits early closes its input; its exit status says why.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| StoreError(format!("git did not finish: {e}")))?;
        let _ = feeder.await;
        Ok(Output {
            stdout: out.stdout,
            stderr: out.stderr,
            success: out.status.success(),
        })
    }

    /// Runs `cmd` and fails unless it succeeds.
    pub async fn run_ok(
        &self,
        cmd: Command,
        input: &[u8],
        what: &str,
    ) -> Result<Output, StoreError> {
        let out = self.run(cmd, input).await?;
        if !out.success {
            return Err(StoreError(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out)
    }
}
