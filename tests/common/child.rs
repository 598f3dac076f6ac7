//! A brook as a child process (the `brook` binary), for tests that kill it, limit it, or
//! measure its memory.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Brook {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything it logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A failing assertion must not leave the child running.
impl Drop for Brook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Brook {
    /// Starts brook on loopback ephemeral ports with `args` added.
    pub fn start(data_dir: &Path, args: &[&str]) -> Brook {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_brook")), data_dir, args)
    }

    /// As `start`, with environment variables set.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Brook {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brook"));
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, data_dir, args)
    }

    /// Starts brook with its soft open-files limit lowered to `soft` first (as a shell's
    /// `ulimit -Sn` would leave it).
    pub fn start_with_nofile(data_dir: &Path, soft: u64, args: &[&str]) -> Brook {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_brook"));
        Self::spawn(cmd, data_dir, args)
    }

    fn spawn(mut cmd: Command, data_dir: &Path, args: &[&str]) -> Brook {
        if cmd.get_envs().all(|(k, _)| k != "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--prometheus-listen",
                "127.0.0.1:0",
                "--advertised-host",
                "127.0.0.1",
            ])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The listening line carries the ephemeral port.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr);
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let Some(line) = next_line(&mut lines) else {
                panic!(
                    "brook exited before listening:\n{}",
                    log.lock().unwrap().join("\n")
                );
            };
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split(" listening addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe, whatever it writes
        // (a line that is not UTF-8 must not stop the draining).
        let sink = log.clone();
        std::thread::spawn(move || {
            while let Some(line) = next_line(&mut lines) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Brook { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        proc_field(self.pid(), "status", "VmRSS:")
    }

    /// The soft open-files limit it runs with.
    pub fn nofile_soft(&self) -> u64 {
        proc_field(self.pid(), "limits", "Max open files")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The management API's address, from its log line.
    pub fn http_addr(&self) -> SocketAddr {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find_map(|l| l.split("management API addr=").nth(1))
            .expect("no management API line");
        line.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// The next line, decoded lossily; `None` at the end.
fn next_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&line).trim_end().to_owned()),
        _ => None,
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text.lines().find(|l| l.starts_with(key)).unwrap();
    line[key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
