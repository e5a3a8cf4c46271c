//! `plait-echo-client`: closed-loop TCP echo load; prints one JSON line.
//!
//! ```text
//! plait-echo-client --port P [--host 127.0.0.1] [--conns 10] [--size 1024]
//!                   [--duration SECONDS | --messages N] [--warmup N]
//!                   [--cpu N] [--timeout SECONDS] [--spin-us MICROSECONDS]
//! ```
//! `--spin-us` polls epoll without blocking for up to that long before
//! sleeping in it, so an echo that comes back quickly never waits for a
//! halted vCPU to wake (default 0: always sleep).
//! Exit status 0 with the JSON report on stdout; 1 with a message on stderr
//! on any failure (refused connection, short echo, timeout); 2 on bad usage.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use plait_echo::args::Args;
use plait_echo::client::{self, Config, Stop};
use plait_echo::sys::pin_to_cpu;

const USAGE: &str = "usage: plait-echo-client --port P [--host 127.0.0.1] [--conns 10] \
[--size 1024] [--duration SECONDS | --messages N] [--warmup N] [--cpu N] [--timeout SECONDS] [--spin-us MICROSECONDS]";

fn config(args: &Args) -> Result<(Config, Option<usize>), String> {
    let host: String = args.get_or("host", "127.0.0.1".to_string())?;
    let port: u16 = args.get("port")?.ok_or("--port is required")?;
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("--host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("--host {host}: no address"))?;
    let stop = match (args.get::<f64>("duration")?, args.get::<u64>("messages")?) {
        (Some(_), Some(_)) => return Err("give --duration or --messages, not both".into()),
        (Some(d), None) if d > 0.0 && d.is_finite() => Stop::Duration(Duration::from_secs_f64(d)),
        (Some(_), None) => return Err("--duration must be > 0".into()),
        (None, Some(m)) if m > 0 => Stop::Messages(m),
        (None, Some(_)) => return Err("--messages must be > 0".into()),
        (None, None) => Stop::Duration(Duration::from_secs(1)),
    };
    let timeout: f64 = args.get_or("timeout", 60.0)?;
    if !(timeout > 0.0 && timeout.is_finite()) {
        return Err("--timeout must be > 0".into());
    }
    let cfg = Config {
        addr,
        conns: args.get_or("conns", 10)?,
        size: args.get_or("size", 1024)?,
        stop,
        warmup: args.get_or("warmup", 0)?,
        timeout: Duration::from_secs_f64(timeout),
        spin: Duration::from_micros(args.get_or("spin-us", 0)?),
    };
    if cfg.conns == 0 || cfg.size == 0 {
        return Err("--conns and --size must be >= 1".into());
    }
    Ok((cfg, args.get("cpu")?))
}

fn main() -> ExitCode {
    let parsed = Args::parse(
        std::env::args().skip(1),
        &[
            "host", "port", "conns", "size", "duration", "messages", "warmup", "cpu", "timeout",
            "spin-us",
        ],
        &[],
    );
    let (cfg, cpu) = match parsed.and_then(|a| config(&a)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("plait-echo-client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let pinned = match cpu {
        Some(c) => match pin_to_cpu(c) {
            Ok(()) => Some(c),
            Err(e) => {
                eprintln!("plait-echo-client: cannot pin to CPU {c}: {e}; running unpinned");
                None
            }
        },
        None => None,
    };
    match client::run(&cfg) {
        Ok(report) => {
            println!("{}", report.to_json(pinned));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plait-echo-client: {}: {e}", cfg.addr);
            ExitCode::from(1)
        }
    }
}
