//! `plait-echo-server`: the native epoll echo server (the benchmark's limit).
//!
//! ```text
//! plait-echo-server [--host 127.0.0.1] [--port 0] [--cpu N]
//!                   [--exit-on-stdin-eof] [--max-seconds SECONDS]
//! ```
//! Prints `{"port":P}` on one line once it listens, then echoes until its
//! standard input closes (with `--exit-on-stdin-eof`: it dies with the
//! process that holds the other end), `--max-seconds` pass, or it is killed.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use plait_echo::args::Args;
use plait_echo::server::{Server, Until};
use plait_echo::sys::pin_to_cpu;

const USAGE: &str = "usage: plait-echo-server [--host 127.0.0.1] [--port 0] [--cpu N] \
[--exit-on-stdin-eof] [--max-seconds SECONDS]";

fn run(args: &Args) -> Result<(), String> {
    let host: String = args.get_or("host", "127.0.0.1".to_string())?;
    let port: u16 = args.get_or("port", 0)?;
    let max_seconds: Option<f64> = args.get("max-seconds")?;
    if let Some(cpu) = args.get::<usize>("cpu")? {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("plait-echo-server: cannot pin to CPU {cpu}: {e}; running unpinned");
        }
    }
    let server = Server::bind(&host, port).map_err(|e| format!("bind {host}:{port}: {e}"))?;
    let port = server.port().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{{\"port\":{port}}}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    drop(out);
    let stdin = std::io::stdin();
    let deadline = match max_seconds {
        Some(s) if s > 0.0 && s.is_finite() => Some(Instant::now() + Duration::from_secs_f64(s)),
        Some(_) => return Err("--max-seconds must be > 0".into()),
        None => None,
    };
    let until = Until {
        eof_on: args.flag("exit-on-stdin-eof").then(|| stdin.as_fd()),
        deadline,
    };
    server
        .serve(until)
        .map(|_| ())
        .map_err(|e| format!("serve: {e}"))
}

fn main() -> ExitCode {
    let parsed = Args::parse(
        std::env::args().skip(1),
        &["host", "port", "cpu", "max-seconds"],
        &["exit-on-stdin-eof"],
    );
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plait-echo-server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plait-echo-server: {e}");
            ExitCode::from(1)
        }
    }
}
