//! Client and server round trips on ephemeral ports, each bounded: the
//! client has a timeout, the server stops when its watched socket closes or
//! at a deadline, and the binaries are killed if they overrun.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use plait_echo::client::{self, Config, Stop};
use plait_echo::server::{Server, Until};

const BOUND: Duration = Duration::from_secs(30);

fn round_trip(size: usize, stop: Stop) -> client::Report {
    let server = Server::bind("127.0.0.1", 0).unwrap();
    let port = server.port().unwrap();
    let (keep_alive, watched) = UnixStream::pair().unwrap();
    let serving = thread::spawn(move || {
        let until = Until {
            eof_on: Some(watched.as_fd()),
            deadline: Some(Instant::now() + BOUND),
        };
        server.serve(until)
    });
    let cfg = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        conns: 4,
        size,
        stop,
        warmup: 8,
        timeout: BOUND,
        spin: Duration::from_micros(if size < 4096 { 50 } else { 0 }), // both waiting modes
    };
    let report = client::run(&cfg);
    drop(keep_alive); // EOF on the watched end: the server returns
    let stats = serving.join().unwrap().unwrap();
    let report = report.unwrap();
    assert_eq!(stats.connections, 4);
    assert!(stats.bytes >= (report.messages + cfg.warmup) * size as u64);
    report
}

#[test]
fn echo_counts_small_messages() {
    let r = round_trip(1024, Stop::Messages(2000));
    assert_eq!(r.messages, 2000);
    assert!(r.seconds > 0.0 && r.rate() > 0.0);
}

#[test]
fn echo_large_messages_cross_partial_writes() {
    // 1 MiB does not fit a loopback socket buffer in one write: both sides
    // go through their EPOLLOUT paths.
    let r = round_trip(1 << 20, Stop::Messages(40));
    assert_eq!(r.messages, 40);
}

#[test]
fn echo_for_a_duration() {
    let r = round_trip(7, Stop::Duration(Duration::from_millis(100)));
    assert!(r.messages > 0);
    assert!(r.seconds >= 0.1);
}

#[test]
fn client_times_out_on_a_silent_server() {
    // A listener that accepts (the kernel does) but never echoes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = Config {
        addr: silent.local_addr().unwrap(),
        conns: 2,
        size: 16,
        stop: Stop::Messages(1),
        warmup: 0,
        timeout: Duration::from_millis(200),
        spin: Duration::from_secs(5), // spinning must still honour the timeout
    };
    let t0 = Instant::now();
    let err = client::run(&cfg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// Wait for a child with a deadline; kill it on overrun.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child overran {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn json_field(line: &str, name: &str) -> String {
    let key = format!("\"{name}\":");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect()
}

#[test]
fn binaries_speak_the_harness_protocol() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_plait-echo-server"))
        .args(["--port", "0", "--exit-on-stdin-eof", "--max-seconds", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = json_field(&first, "port");

    let mut client = Command::new(env!("CARGO_BIN_EXE_plait-echo-client"))
        .args([
            "--port",
            &port,
            "--conns",
            "3",
            "--size",
            "512",
            "--messages",
            "500",
            "--warmup",
            "10",
            "--timeout",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut client, BOUND);
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(status.success(), "client failed: {line}");
    assert_eq!(json_field(&line, "messages"), "500");
    assert_eq!(json_field(&line, "conns"), "3");
    assert!(json_field(&line, "rate").parse::<f64>().unwrap() > 0.0);

    drop(server.stdin.take()); // EOF: the server exits by itself
    assert!(wait_bounded(&mut server, BOUND).success());
}

#[test]
fn client_rejects_bad_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_plait-echo-client"))
        .args(["--port", "1", "--duration", "1", "--messages", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
