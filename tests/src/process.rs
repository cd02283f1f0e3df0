//! A program under test as a real process, with its output captured line by line, that
//! cannot outlive the test: it runs under a shell that SIGKILLs it when its standard input
//! (a pipe held by this process) closes, which the kernel does when the test process exits
//! for any reason. Signals go to the program itself (its pid is reported by the shell).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts the program in the background, reports its pid (the first line of stderr), kills
/// it when stdin closes, and exits with its status.
/// (A background job's stdin is /dev/null unless redirected, hence fd 3.)
const LIFELINE: &str = r#"
exec 3<&0
"$@" 2>&1 </dev/null &
c=$!
echo "pid $c" >&2
( cat <&3 >/dev/null; kill -9 $c 2>/dev/null ) &
exec 3<&-
wait $c
"#;

/// A running program; SIGKILLed on drop.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    pid: u32,
    shell: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `program` with `args` and the extra environment `env`. Its stdout and stderr
    /// are captured together.
    pub fn start(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(LIFELINE)
            .arg(name)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stderr = shell.stderr.take().expect("piped stderr");
        let mut first = String::new();
        let mut stderr = BufReader::new(stderr);
        stderr
            .read_line(&mut first)
            .expect("the shell reports the pid");
        let pid = first
            .trim()
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the shell: {first:?}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout = shell.stdout.take().expect("piped stdout");
        for reader in [
            Box::new(BufReader::new(stdout)) as Box<dyn BufRead + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    if std::env::var_os("STATUSLIST_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    if let Ok(mut out) = output.lock() {
                        out.push(line);
                    }
                }
            });
        }
        Self {
            name: name.to_owned(),
            pid,
            shell,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every line so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Total bytes of output so far.
    pub fn output_bytes(&self) -> usize {
        self.output().iter().map(|l| l.len() + 1).sum()
    }

    /// Waits for a line containing `needle`, up to `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {needle:?} within {timeout:?}:\n{}",
                self.name,
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a condition
        }
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) to the program.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.shell.try_wait().ok().flatten()
    }

    /// Waits for the program to exit; `None` when it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a condition
        }
    }

    /// SIGTERM, then the time it took to exit (panics past `limit`).
    pub fn terminate_within(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.signal("TERM");
        match self.wait_exit(limit) {
            Some(_) => started.elapsed(),
            None => panic!(
                "{} still running {limit:?} after SIGTERM:\n{}",
                self.name,
                self.output().join("\n")
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = self.shell.wait();
        }
    }
}

/// A free TCP port on the loopback interface (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
