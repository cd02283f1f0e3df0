//! A private, throwaway PostgreSQL server: `statuslist dev`, the tests and `scripts/test`
//! (through the `statuslist-devdb` binary) start one when `DATABASE_URL` is not set. Data
//! lives in a temporary directory removed on drop. A development and test tool: it runs
//! `initdb`, `pg_ctl` and `pg_basebackup` from the machine's PostgreSQL binaries.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a server could not be started, stopped or configured (the message says what to do).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DevDbError(String);

pub type Result<T> = std::result::Result<T, DevDbError>;

/// Extra setup of a throwaway server (TLS tests: certificates, `ssl = on`, `hostssl`).
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    /// Files written into the data directory, readable by the server only.
    pub files: Vec<(String, Vec<u8>)>,
    /// Lines appended to `postgresql.conf`.
    pub settings: Vec<String>,
    /// Replaces `pg_hba.conf` when set.
    pub hba: Option<String>,
    /// Commits wait for their WAL to be written (`synchronous_commit = on`), so an
    /// acknowledged commit survives an immediate-mode stop (a crash of the server
    /// process). Off by default: faster, and a fast stop loses nothing either.
    pub synchronous_commit: bool,
    /// `max_connections` (200 when unset).
    pub max_connections: Option<u32>,
}

/// A running server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `Some(user)` when running as root: PostgreSQL refuses root, so it runs as `user`.
    run_as: Option<String>,
    running: bool,
    synchronous_commit: bool,
    max_connections: u32,
}

/// Where the PostgreSQL server binaries are: `$PG_BIN`, then `PATH`, then the highest
/// version under `/usr/lib/postgresql/*/bin` (Debian and Ubuntu packages).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        // Where `pg_ctl` really is (a link on PATH to the packaged binaries): the other
        // tools (`pg_basebackup`) are there too.
        return std::fs::canonicalize(dir.join("pg_ctl"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| has_tools(d))
            .or(Some(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn id_of(user: &str, flag: &str) -> Result<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| DevDbError(format!("cannot run id: {e}")))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            DevDbError(format!(
                "running as root needs a '{user}' user to run PostgreSQL"
            ))
        })
}

impl PgServer {
    /// Initialises a cluster in a fresh temporary directory and starts it on a free
    /// loopback port (trust authentication, user `postgres`, fsync off: nothing here is
    /// meant to survive).
    pub fn start() -> Result<Self> {
        Self::start_with(&ServerOptions::default())
    }

    /// [`PgServer::start`] with extra files and settings in place before it starts.
    pub fn start_with(options: &ServerOptions) -> Result<Self> {
        let bin = find_bin_dir().ok_or_else(|| {
            DevDbError(
                "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under \
                 /usr/lib/postgresql; install them (Debian/Ubuntu: apt-get install postgresql) \
                 or set DATABASE_URL"
                    .into(),
            )
        })?;
        let (mut server, owner) = Self::unstarted(bin, options.synchronous_commit)?;
        server.max_connections = options.max_connections.unwrap_or(200);
        server.run(
            "initdb",
            &[
                "-D",
                &server.data_dir(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        server.configure(options, owner)?;
        server.port = free_port()?;
        server.start_again()?;
        Ok(server)
    }

    /// A server not initialised yet: its temporary directory (handed to the user it runs
    /// as) and that user's ids.
    fn unstarted(bin: PathBuf, synchronous_commit: bool) -> Result<(Self, Option<(u32, u32)>)> {
        let dir = tempfile::Builder::new()
            .prefix("statuslist-pg-")
            .tempdir()
            .map_err(|e| DevDbError(format!("cannot create a temporary directory: {e}")))?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let owner = match &run_as {
            Some(user) => {
                let (uid, gid) = (id_of(user, "-u")?, id_of(user, "-g")?);
                std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| {
                    DevDbError(format!("cannot hand the data directory to {user}: {e}"))
                })?;
                Some((uid, gid))
            }
            None => None,
        };
        let server = Self {
            bin,
            dir,
            port: 0,
            run_as,
            running: false,
            synchronous_commit,
            max_connections: 200,
        };
        Ok((server, owner))
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started on a port of its
    /// own, known to the primary by `name` (its `application_name`, what
    /// `synchronous_standby_names` lists). It never waits for a standby of its own once
    /// promoted (`synchronous_standby_names` cleared).
    pub fn standby_of(primary: &PgServer, name: &str) -> Result<Self> {
        let (mut server, _) = Self::unstarted(primary.bin.clone(), primary.synchronous_commit)?;
        server.max_connections = primary.max_connections;
        let port = primary.port.to_string();
        server.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &server.data_dir(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        let conf = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={name}'\nsynchronous_standby_names = ''\n"
        );
        let auto = server.dir.path().join("data/postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto)
            .map_err(|e| DevDbError(format!("postgresql.auto.conf: {e}")))?;
        text.push_str(&conf);
        std::fs::write(&auto, text)
            .map_err(|e| DevDbError(format!("postgresql.auto.conf: {e}")))?;
        server.port = free_port()?;
        server.start_again()?;
        Ok(server)
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&mut self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-w", "-t", "60", "promote"],
        )
    }

    fn configure(&self, options: &ServerOptions, owner: Option<(u32, u32)>) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let data = self.dir.path().join("data");
        let fail = |what: &str, e: std::io::Error| DevDbError(format!("{what}: {e}"));
        for (name, content) in &options.files {
            let path = data.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(content))
                .map_err(|e| fail(name, e))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| fail(name, e))?;
            }
        }
        if !options.settings.is_empty() {
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .map_err(|e| fail("postgresql.conf", e))?;
            writeln!(conf, "\n{}", options.settings.join("\n"))
                .map_err(|e| fail("postgresql.conf", e))?;
        }
        if let Some(hba) = &options.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| fail("pg_hba.conf", e))?;
        }
        Ok(())
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| DevDbError(format!("cannot run {}: {e}", program.display())))?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            return Err(DevDbError(format!(
                "{tool} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Starts the server (again, after [`PgServer::stop`]) on the same port and data.
    pub fn start_again(&mut self) -> Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit={} \
             -c full_page_writes=off -c max_connections={}",
            self.port,
            self.dir.path().display(),
            if self.synchronous_commit { "on" } else { "off" },
            self.max_connections,
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "30",
                "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: sessions are terminated).
    pub fn stop(&mut self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        )?;
        self.running = false;
        Ok(())
    }

    /// Stops the server as a crash would (immediate mode: no checkpoint, sessions cut);
    /// [`PgServer::start_again`] then recovers from the WAL.
    pub fn kill(&mut self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        )?;
        self.running = false;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run(
                "pg_ctl",
                &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
            );
        }
    }
}

fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| DevDbError(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| DevDbError(e.to_string()))
}
