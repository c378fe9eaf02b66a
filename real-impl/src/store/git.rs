//! Running the `git` binary: one place that builds commands with a clean environment and
//! turns failures into store errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use stormcell_model::error::StoreError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How to run `git`.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
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
    /// Its exit status, when it exited (not killed by a signal).
    pub code: Option<i32>,
    /// Why its input was cut short, when reading the input failed.
    pub input_error: Option<String>,
}

/// How much of a command's input is read before it is written to the command: enough for
/// few system calls, small enough that a pack of any size costs the daemon no memory.
const FEED_CHUNK: usize = 256 * 1024;

impl Git {
    /// Runs `program`. Git never talks to other devices itself: objects move between
    /// devices over the peer connection ([`crate::objects`]), so no command carries a
    /// device credential.
    pub fn new(program: PathBuf) -> Self {
        Git { program }
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

    /// Runs `cmd`, feeding it `input`, and collects its output.
    pub async fn run(&self, cmd: Command, input: &[u8]) -> Result<Output, StoreError> {
        self.run_streamed(cmd, input).await
    }

    /// Runs `cmd`, feeding it everything `input` reads as the command takes it (a pushed
    /// pack is streamed from its file, never held in memory), and collects its output.
    /// When reading `input` fails, the command sees its input end there and
    /// [`Output::input_error`] says why.
    pub async fn run_streamed<R>(
        &self,
        mut cmd: Command,
        mut input: R,
    ) -> Result<Output, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StoreError(format!("cannot run {}: {e}", self.program.display())))?;
        let stdin = child.stdin.take();
        // Written concurrently with reading the output, so a large input cannot deadlock
        // against a child that answers while it reads.
        let feed = async move {
            let mut stdin = stdin?;
            let mut buf = vec![0u8; FEED_CHUNK];
            loop {
                let n = match input.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => return Some(e.to_string()),
                };
                // A child that exits early closes its input; its exit status says why.
                if stdin.write_all(&buf[..n]).await.is_err() {
                    return None;
                }
            }
            let _ = stdin.shutdown().await;
            None
        };
        let (input_error, out) = tokio::join!(feed, child.wait_with_output());
        let out = out.map_err(|e| StoreError(format!("git did not finish: {e}")))?;
        Ok(Output {
            stdout: out.stdout,
            stderr: out.stderr,
            success: out.status.success(),
            code: out.status.code(),
            input_error,
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
