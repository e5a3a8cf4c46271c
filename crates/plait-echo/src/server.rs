//! The reference echo server: what a C programmer writes with epoll.
//!
//! One thread, level-triggered epoll, non-blocking sockets with TCP_NODELAY
//! (asyncio, uvloop and rloop set it too). A readable connection gets one
//! `read` into a shared buffer and the bytes are written straight back; if
//! the socket takes only part of them, the rest waits in the connection's
//! own buffer, and the connection stops reading and waits for EPOLLOUT until
//! it has drained (so a slow reader cannot make the server buffer without
//! bound). No Python, no allocation per message: the fastest echo loop the
//! machine can run, the limit the event loops are measured against.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use plait_core::reactor::{Epoll, Event, Events, EPOLLIN, EPOLLOUT, EPOLLRDHUP};

const LISTENER: u64 = 0;
const WATCH: u64 = 1;
const FIRST_CONN: u64 = 2;
/// Readiness reports one wait takes.
const MAX_EVENTS: usize = 256;
/// Bytes one `read` may take. 256 KiB as asyncio's selector transports.
const READ_SIZE: usize = 256 * 1024;

/// When [`Server::serve`] returns.
#[derive(Default)]
pub struct Until<'a> {
    /// Return when this descriptor reports end of file or hang-up (the
    /// binary watches its standard input, a test one end of a socket pair).
    pub eof_on: Option<BorrowedFd<'a>>,
    /// Return at this instant at the latest.
    pub deadline: Option<Instant>,
}

/// What a finished [`Server::serve`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServeStats {
    pub connections: u64,
    pub bytes: u64,
}

struct Conn {
    stream: TcpStream,
    /// Echo bytes the socket has not taken yet, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
}

pub struct Server {
    listener: TcpListener,
}

impl Server {
    /// Listen on `host:port` (port 0: an ephemeral port, see [`Server::port`]).
    pub fn bind(host: &str, port: u16) -> io::Result<Server> {
        let listener = TcpListener::bind((host, port))?;
        listener.set_nonblocking(true)?;
        Ok(Server { listener })
    }

    pub fn port(&self) -> io::Result<u16> {
        Ok(self.listener.local_addr()?.port())
    }

    /// Echo on every accepted connection until `until` says stop.
    pub fn serve(self, until: Until<'_>) -> io::Result<ServeStats> {
        let epoll = Epoll::new()?;
        epoll.add(&self.listener, EPOLLIN, LISTENER)?;
        if let Some(fd) = until.eof_on {
            epoll.add(&fd.as_raw_fd(), EPOLLIN | EPOLLRDHUP, WATCH)?;
        }
        let mut conns: Vec<Option<Conn>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut buf = vec![0u8; READ_SIZE];
        let mut ready = Events::with_capacity(MAX_EVENTS);
        let mut stats = ServeStats::default();
        loop {
            let timeout = match until.deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(stats);
                    }
                    Some(d - now)
                }
                None => None,
            };
            epoll.wait(&mut ready, MAX_EVENTS, timeout)?;
            for ev in ready.iter() {
                let token = ev.token;
                match token {
                    LISTENER => self.accept_all(&epoll, &mut conns, &mut free, &mut stats)?,
                    WATCH => {
                        if watched_fd_closed(until.eof_on) {
                            return Ok(stats);
                        }
                    }
                    _ => {
                        let slot = (token - FIRST_CONN) as usize;
                        let keep = match conns[slot].as_mut() {
                            Some(c) => c.on_ready(ev, &epoll, token, &mut buf, &mut stats),
                            None => true, // closed earlier in this batch
                        };
                        if !keep {
                            if let Some(c) = conns[slot].take() {
                                let _ = epoll.delete(&c.stream);
                            }
                            free.push(slot);
                        }
                    }
                }
            }
        }
    }

    fn accept_all(
        &self,
        epoll: &Epoll,
        conns: &mut Vec<Option<Conn>>,
        free: &mut Vec<usize>,
        stats: &mut ServeStats,
    ) -> io::Result<()> {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection that died in the backlog is not the server's failure.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            };
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            let slot = free.pop().unwrap_or_else(|| {
                conns.push(None);
                conns.len() - 1
            });
            epoll.add(&stream, EPOLLIN, FIRST_CONN + slot as u64)?;
            conns[slot] = Some(Conn {
                stream,
                pending: Vec::new(),
                sent: 0,
            });
            stats.connections += 1;
        }
    }
}

/// Whether a watched descriptor that epoll reported has really closed (a
/// pipe or socket with data in it is readable without being at EOF).
fn watched_fd_closed(fd: Option<BorrowedFd<'_>>) -> bool {
    let Some(fd) = fd else { return false };
    let mut byte = [0u8; 64];
    // SAFETY: `byte` is a writable buffer of the length passed; `fd` is a
    // descriptor borrowed for the duration of `serve`.
    let n = unsafe { libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), byte.len()) };
    // 0 is EOF; an error other than "try again" means the pipe is gone.
    n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}

impl Conn {
    /// Handle one readiness report; false means close the connection.
    fn on_ready(
        &mut self,
        ev: Event,
        epoll: &Epoll,
        token: u64,
        buf: &mut [u8],
        stats: &mut ServeStats,
    ) -> bool {
        if !self.pending.is_empty() {
            // Waiting for EPOLLOUT: drain first, read nothing meanwhile.
            if ev.writable() {
                match self.flush() {
                    Ok(true) => return epoll.modify(&self.stream, EPOLLIN, token).is_ok(),
                    Ok(false) => return true,
                    Err(_) => return false,
                }
            }
            return true;
        }
        if !ev.readable() {
            return true;
        }
        let n = match self.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return true
            }
            Err(_) => return false,
        };
        stats.bytes += n as u64;
        let mut done = 0;
        while done < n {
            match self.stream.write(&buf[done..n]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending.extend_from_slice(&buf[done..n]);
                    self.sent = 0;
                    return epoll.modify(&self.stream, EPOLLOUT, token).is_ok();
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Write pending bytes; Ok(true) once all are written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.pending.len() {
            match self.stream.write(&self.pending[self.sent..]) {
                Ok(k) => self.sent += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.sent = 0;
        Ok(true)
    }
}
