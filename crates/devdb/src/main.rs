//! `statuslist-devdb`: a throwaway PostgreSQL server for the length of a script.
//!
//! ```text
//! statuslist-devdb --url-file FILE [--max-connections N]
//! ```
//!
//! Starts a server (see the library), writes its URL (database `postgres`) into FILE once
//! it accepts connections, then runs until it reads a line `stop` on its standard input,
//! the input ends, or the process that started it is gone — and then stops the server and
//! removes its directory. `scripts/test` runs it that way (`exec {fd}> >(...)`, and
//! `echo stop >&$fd` at exit). The `stop` line matters: every process the script starts
//! afterwards inherits the pipe (a daemon started by an end-to-end script keeps it open for
//! good), so its end of file may never come.

use std::path::PathBuf;
use std::process::ExitCode;

use statuslist_devdb::{PgServer, ServerOptions};

fn usage() -> String {
    "usage: statuslist-devdb --url-file FILE [--max-connections N]".into()
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<(PathBuf, ServerOptions), String> {
    let mut url_file = None;
    let mut options = ServerOptions::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url-file" => url_file = Some(PathBuf::from(value()?)),
            "--max-connections" => {
                let v = value()?;
                options.max_connections = Some(
                    v.parse()
                        .map_err(|_| format!("--max-connections {v}: not a number"))?,
                );
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    let url_file = url_file.ok_or_else(usage)?;
    Ok((url_file, options))
}

fn run() -> Result<(), String> {
    let (url_file, options) = parse(std::env::args().skip(1))?;
    let server = PgServer::start_with(&options).map_err(|e| e.to_string())?;
    // Written whole, then renamed: a reader never sees half a URL.
    let partial = url_file.with_extension("partial");
    std::fs::write(&partial, server.url("postgres"))
        .and_then(|()| std::fs::rename(&partial, &url_file))
        .map_err(|e| format!("{}: {e}", url_file.display()))?;
    let parent = std::os::unix::process::parent_id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            match line {
                Ok(l) if l.trim() == "stop" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(500)) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            // Re-parented: whoever started it is gone without a word.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if std::os::unix::process::parent_id() != parent {
                    break;
                }
            }
        }
    }
    drop(server);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statuslist-devdb: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments() {
        let (file, options) = parse(args("--url-file u --max-connections 400")).expect("parsed");
        assert_eq!(file.to_str(), Some("u"));
        assert_eq!(options.max_connections, Some(400));
        assert!(parse(args("--max-connections 4")).is_err(), "no url file");
        assert!(parse(args("--url-file u --max-connections x")).is_err());
        assert!(parse(args("--url-file")).is_err());
        assert!(parse(args("--url-file u --port 1")).is_err());
    }
}
