//! Witnesses: every signed checkpoint also goes somewhere off the issuer's
//! data directory, so that rolling back the store, the records and the
//! checkpoints together is still caught (`audit verify --witness FILE`
//! proves that the log holds every witnessed checkpoint).
//!
//! A witness is a file (on another mount, ideally another host's: NFS, a
//! mounted bucket) that gets one checkpoint line appended and synced, or a
//! command that gets the line on its standard input (`logger -t
//! hallmark-audit` for syslog or journald, `curl --data-binary @- URL` for
//! an HTTP endpoint). A witness that fails keeps its backlog and is tried
//! again with the next checkpoint; minting goes on (a checkpoint commits
//! to every record before it, so the newest one delivered is what counts).

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

/// How many undelivered checkpoints one witness keeps; older ones are
/// dropped first (the newest commits to everything before it).
const BACKLOG: usize = 1024;
/// How long a witness command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[audit.witness]]` entry: exactly one of `file` or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum WitnessConfig {
    /// Append each checkpoint line to this file (created 0640) and sync it.
    File(PathBuf),
    /// Run this program (argv, no shell) with the checkpoint line on its
    /// standard input; exit status 0 means delivered.
    Command(Vec<String>),
}

impl WitnessConfig {
    /// Checks what can be checked before start.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            WitnessConfig::File(path) if !path.is_absolute() => Err(format!(
                "audit.witness file {} must be an absolute path",
                path.display()
            )),
            WitnessConfig::Command(argv) if argv.is_empty() || argv[0].is_empty() => {
                Err("audit.witness command must name a program".into())
            }
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        match self {
            WitnessConfig::File(path) => format!("file {}", path.display()),
            WitnessConfig::Command(argv) => format!("command {}", argv.join(" ")),
        }
    }
}

/// The configured witnesses, each with its backlog.
#[derive(Debug, Default)]
pub struct Witnesses {
    sinks: Vec<Sink>,
}

#[derive(Debug)]
struct Sink {
    config: WitnessConfig,
    backlog: tokio::sync::Mutex<VecDeque<(u64, Vec<u8>)>>,
    failures: Mutex<u64>,
}

impl Witnesses {
    /// Witnesses for `configs`.
    pub fn new(configs: &[WitnessConfig]) -> Witnesses {
        Witnesses {
            sinks: configs
                .iter()
                .map(|config| Sink {
                    config: config.clone(),
                    backlog: tokio::sync::Mutex::new(VecDeque::new()),
                    failures: Mutex::new(0),
                })
                .collect(),
        }
    }

    /// Whether any witness is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Delivery failures so far, over all witnesses.
    pub fn failures(&self) -> u64 {
        self.sinks
            .iter()
            .map(|s| s.failures.lock().map_or(0, |f| *f))
            .sum()
    }

    /// Delivers checkpoint `seq` (its canonical line) to every witness,
    /// after whatever each still owes from earlier failures.
    pub async fn send(&self, seq: u64, line: Vec<u8>) {
        for sink in &self.sinks {
            let mut backlog = sink.backlog.lock().await;
            if backlog.len() >= BACKLOG {
                backlog.pop_front();
            }
            backlog.push_back((seq, line.clone()));
            while let Some((seq, line)) = backlog.front() {
                match deliver(&sink.config, line).await {
                    Ok(()) => {
                        backlog.pop_front();
                    }
                    Err(error) => {
                        if let Ok(mut failures) = sink.failures.lock() {
                            *failures += 1;
                        }
                        tracing::error!(target: "hallmark::audit", witness = %sink.config.describe(), seq, %error, pending = backlog.len(), "audit witness did not take the checkpoint; it is retried with the next one");
                        break;
                    }
                }
            }
        }
    }
}

async fn deliver(config: &WitnessConfig, line: &[u8]) -> Result<(), String> {
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    match config {
        WitnessConfig::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))
            })
            .await
            .map_err(|e| format!("witness task failed: {e}"))?
        }
        WitnessConfig::Command(argv) => {
            let run = async {
                let mut child = tokio::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(&bytes)
                        .await
                        .map_err(|e| format!("cannot write to {}: {e}", argv[0]))?;
                }
                let out = child
                    .wait_with_output()
                    .await
                    .map_err(|e| format!("{}: {e}", argv[0]))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} exited with {}: {}",
                        argv[0],
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            };
            tokio::time::timeout(COMMAND_TIMEOUT, run)
                .await
                .map_err(|_| format!("{} took longer than {COMMAND_TIMEOUT:?}", argv[0]))?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_witness_gets_every_line_and_a_failing_one_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("witness.log");
        let later = dir.path().join("later/witness.log");
        let witnesses = Witnesses::new(&[
            WitnessConfig::File(good.clone()),
            WitnessConfig::File(later.clone()),
        ]);
        witnesses.send(3, b"{\"a\":1}".to_vec()).await;
        witnesses.send(7, b"{\"a\":2}".to_vec()).await;
        assert_eq!(
            std::fs::read_to_string(&good).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        // The second witness's directory did not exist: both failed, both
        // are kept, and delivered in order once it does.
        assert_eq!(witnesses.failures(), 2);
        std::fs::create_dir(dir.path().join("later")).unwrap();
        witnesses.send(9, b"{\"a\":3}".to_vec()).await;
        assert_eq!(
            std::fs::read_to_string(&later).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
    }

    #[tokio::test]
    async fn a_command_witness_gets_the_line_on_stdin_and_must_exit_zero() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let witnesses = Witnesses::new(&[WitnessConfig::Command(vec![
            "sh".into(),
            "-c".into(),
            format!("cat >> {}", out.display()),
        ])]);
        witnesses.send(1, b"{\"x\":1}".to_vec()).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"x\":1}\n");
        let failing = Witnesses::new(&[WitnessConfig::Command(vec!["false".into()])]);
        failing.send(1, b"{}".to_vec()).await;
        assert_eq!(failing.failures(), 1);
        assert!(
            WitnessConfig::Command(vec![]).validate().is_err()
                && WitnessConfig::File("rel/path".into()).validate().is_err()
        );
    }
}
