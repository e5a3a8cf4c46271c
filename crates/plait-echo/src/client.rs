//! The load generator: N connections in a closed loop over one epoll set.
//!
//! Each connection has one message in flight at a time: it writes the whole
//! message (waiting for EPOLLOUT if the socket takes only part), reads until
//! all of the echo is back, checks it, and sends the next. So the rate is
//! bounded by the round trip through the server, never by a queue the
//! client builds up, and ten connections keep ten messages in flight.
//!
//! The first `warmup` echoes (over all connections) are not timed: the timed
//! phase starts at the moment the last of them completes, with every
//! connection already busy, and ends when `Stop` says so. Each message
//! carries its sequence number in its first and last 8 bytes, which the
//! echo must return in place; the bytes between are a per-connection
//! pattern, set once (filling 64 KiB per message would make the client part
//! of what is measured).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use plait_core::reactor::{Epoll, Events, EPOLLIN, EPOLLOUT};

/// When the timed phase ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many timed echoes.
    Messages(u64),
    /// After this long (the echoes completed by then are counted).
    Duration(Duration),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub conns: usize,
    /// Bytes per message (>= 1).
    pub size: usize,
    pub stop: Stop,
    /// Echoes completed before the timed phase starts.
    pub warmup: u64,
    /// The whole run (connect, warm-up, timed phase) fails after this long.
    pub timeout: Duration,
    /// Before blocking in epoll, poll it without blocking for up to this
    /// long: an echo that arrives within the spin never has to wake a
    /// halted CPU (on a VM that costs 100s of µs). Bounded, so a slow
    /// server still finds the client asleep, and a scheduler that favours
    /// sleepers does not demote it on a shared machine. Zero: never spin.
    pub spin: Duration,
}

/// The timed phase's result.
#[derive(Clone, Debug)]
pub struct Report {
    pub messages: u64,
    pub seconds: f64,
    pub conns: usize,
    pub size: usize,
    pub warmup: u64,
}

impl Report {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// One JSON object on one line (the harness parses it).
    pub fn to_json(&self, cpu: Option<usize>) -> String {
        let cpu = cpu.map_or_else(|| "null".to_string(), |c| c.to_string());
        format!(
            "{{\"messages\":{},\"seconds\":{:.6},\"rate\":{:.1},\"conns\":{},\"size\":{},\"warmup\":{},\"cpu\":{}}}",
            self.messages, self.seconds, self.rate(), self.conns, self.size, self.warmup, cpu
        )
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    sent: usize,
    echo: Vec<u8>,
    received: usize,
    seq: u64,
    /// EPOLLOUT is in the interest set (a write is waiting for room).
    want_out: bool,
}

impl Conn {
    fn stamp_len(&self) -> usize {
        self.out.len().min(8)
    }

    /// Start the next message: stamp its number, reset the counters.
    fn begin(&mut self) {
        self.seq += 1;
        let k = self.stamp_len();
        let n = self.out.len();
        let seq = self.seq.to_le_bytes();
        self.out[..k].copy_from_slice(&seq[..k]);
        self.out[n - k..].copy_from_slice(&seq[..k]);
        self.sent = 0;
        self.received = 0;
    }

    /// Write what the socket takes; arrange for EPOLLOUT if it is full.
    fn send(&mut self, epoll: &Epoll, token: u64) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(k) => self.sent += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.want_out {
                        self.want_out = true;
                        epoll.modify(&self.stream, EPOLLIN | EPOLLOUT, token)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if self.want_out {
            self.want_out = false;
            epoll.modify(&self.stream, EPOLLIN, token)?;
        }
        Ok(())
    }

    /// One read; Ok(true) when the whole echo of the message is in.
    fn receive(&mut self) -> io::Result<bool> {
        let want = self.out.len();
        match self.stream.read(&mut self.echo[self.received..want]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            Ok(k) => {
                self.received += k;
                if self.received < want {
                    return Ok(false);
                }
                let k = self.stamp_len();
                if self.echo[..k] != self.out[..k] || self.echo[want - k..] != self.out[want - k..]
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the echo differs from the message sent",
                    ));
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

fn timed_out(what: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no result within {timeout:?}"),
    )
}

/// Connect, warm up, run the timed phase; the report of the timed phase.
pub fn run(cfg: &Config) -> io::Result<Report> {
    if cfg.size == 0 || cfg.conns == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "size and conns must be >= 1",
        ));
    }
    let started = Instant::now();
    let deadline = started + cfg.timeout;
    let epoll = Epoll::new()?;
    let max_events = cfg.conns.max(1);
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out("connect", cfg.timeout));
        }
        let stream = TcpStream::connect_timeout(&cfg.addr, left)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll.add(&stream, EPOLLIN, i as u64)?;
        let out = (0..cfg.size)
            .map(|b| (b as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        conns.push(Conn {
            stream,
            out,
            sent: 0,
            echo: vec![0; cfg.size],
            received: 0,
            seq: 0,
            want_out: false,
        });
    }

    let mut completed: u64 = 0; // every echo, warm-up included
    let mut timed_from: Option<(Instant, u64)> = None; // (start, `completed` then)
    if cfg.warmup == 0 {
        timed_from = Some((Instant::now(), 0));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.begin();
        c.send(&epoll, i as u64)?;
    }
    let mut ready = Events::with_capacity(max_events);
    loop {
        let now = Instant::now();
        if let Some((t0, base)) = timed_from {
            if let Stop::Duration(d) = cfg.stop {
                if now - t0 >= d {
                    return Ok(report(cfg, completed - base, now - t0));
                }
            }
        }
        if now >= deadline {
            return Err(timed_out("echo", cfg.timeout));
        }
        let mut wait = deadline - now;
        if let (Some((t0, _)), Stop::Duration(d)) = (timed_from, cfg.stop) {
            wait = wait.min((t0 + d).saturating_duration_since(now));
        }
        wait_spinning(&epoll, &mut ready, max_events, wait, cfg.spin)?;
        for ev in ready.iter() {
            let token = ev.token;
            let c = &mut conns[token as usize];
            if ev.writable() && c.sent < c.out.len() {
                c.send(&epoll, token)?;
            }
            if !ev.readable() || !c.receive()? {
                continue;
            }
            completed += 1;
            match timed_from {
                None if completed >= cfg.warmup => timed_from = Some((Instant::now(), completed)),
                Some((t0, base)) => {
                    if let Stop::Messages(m) = cfg.stop {
                        if completed - base >= m {
                            return Ok(report(cfg, completed - base, t0.elapsed()));
                        }
                    }
                }
                None => {}
            }
            c.begin();
            c.send(&epoll, token)?;
        }
    }
}

/// `epoll.wait`, polling without blocking for up to `spin` first.
fn wait_spinning(
    epoll: &Epoll,
    ready: &mut Events,
    max: usize,
    wait: Duration,
    spin: Duration,
) -> io::Result<()> {
    if !spin.is_zero() {
        let t0 = Instant::now();
        loop {
            epoll.wait(ready, max, Some(Duration::ZERO))?;
            let spun = t0.elapsed();
            if !ready.is_empty() || spun >= wait {
                return Ok(());
            }
            if spun >= spin {
                return epoll.wait(ready, max, Some(wait - spun));
            }
            std::hint::spin_loop();
        }
    }
    epoll.wait(ready, max, Some(wait))
}

fn report(cfg: &Config, messages: u64, elapsed: Duration) -> Report {
    Report {
        messages,
        seconds: elapsed.as_secs_f64(),
        conns: cfg.conns,
        size: cfg.size,
        warmup: cfg.warmup,
    }
}
