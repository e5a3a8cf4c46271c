//! [`Feeder`]: `multiprocessing.Queue.put` never blocks on a full pipe, so
//! when the [`Sink`] (ring or socket) is full the message is kept in a
//! per-process FIFO and a Rust thread (no Python, no GIL) sends it; once
//! anything is pending, later puts queue behind it so this process's
//! messages keep their order.
//!
//! The thread starts on the first overflow and exits once idle; a forked
//! child drops the parent's pending messages and thread, as
//! `multiprocessing.Queue` does.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::packet::{Packet, Sink, SocketSink, INLINE_MAX};
use crate::fork;
use crate::park::{Outcome, WaitCtx};

/// The per-process FIFO of messages that found the socket full, and the
/// thread that drains it.
pub struct Feeder {
    sink: Box<dyn Sink>,
    state: Mutex<FeederState>,
    cv: Condvar,
}

#[derive(Default)]
struct FeederState {
    pending: VecDeque<Arc<Packet>>,
    generation: u64,
    running: bool,
    closed: bool,
    error: Option<String>,
}

impl Feeder {
    /// A feeder for the sending socket `sock`.
    pub fn new(sock: Arc<OwnedFd>) -> Arc<Feeder> {
        Self::with_sink(Box::new(SocketSink(sock)))
    }

    /// A feeder delivering to `sink`.
    pub fn with_sink(sink: Box<dyn Sink>) -> Arc<Feeder> {
        Arc::new(Feeder { sink, state: Mutex::new(FeederState::default()), cv: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeederState> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let gen = fork::generation();
        if st.generation != gen {
            // A forked child: the parent's pending messages and thread are
            // the parent's business, as with multiprocessing's Queue.
            st.pending.clear();
            st.running = false;
            st.generation = gen;
        }
        st
    }

    /// Send `payload` now if nothing is queued ahead of it and the socket
    /// has room, else queue it for the feeder thread. Returns whether it
    /// was queued.
    pub fn send_payload(self: &Arc<Self>, payload: &[u8]) -> io::Result<bool> {
        if payload.len() > INLINE_MAX {
            return self.send(Packet::new(payload)?);
        }
        let st = self.lock();
        if let Some(e) = &st.error {
            return Err(io::Error::other(e.clone()));
        }
        if st.pending.is_empty() {
            match self.sink.try_send_inline(payload, false) {
                Ok(()) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        drop(st);
        self.send(Packet::new(payload)?)
    }

    /// Send `pkt` now if nothing is queued ahead of it and the socket has
    /// room, else queue it for the feeder thread. Returns whether it was
    /// queued.
    pub fn send(self: &Arc<Self>, pkt: Packet) -> io::Result<bool> {
        let mut st = self.lock();
        if let Some(e) = &st.error {
            return Err(io::Error::other(e.clone()));
        }
        if st.pending.is_empty() {
            match self.sink.try_send(&pkt, false) {
                Ok(()) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        st.pending.push_back(Arc::new(pkt));
        if !st.running {
            st.running = true;
            let me = Arc::clone(self);
            std::thread::Builder::new().name("plait-queue-feeder".into()).spawn(move || me.run())?;
        } else {
            self.cv.notify_all();
        }
        Ok(true)
    }

    fn run(&self) {
        loop {
            let front = {
                let mut st = self.lock();
                loop {
                    if let Some(p) = st.pending.front() {
                        break Arc::clone(p);
                    }
                    if st.closed {
                        st.running = false;
                        self.cv.notify_all();
                        return;
                    }
                    let (g, _) = self.cv.wait_timeout(st, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner());
                    st = g;
                    if st.pending.is_empty() && !st.closed {
                        // Idle: let the thread go; the next overflow starts one.
                        st.running = false;
                        self.cv.notify_all();
                        return;
                    }
                }
            };
            let r = loop {
                match self.sink.try_send(&front, true) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sink.wait_room(&front),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let mut st = self.lock();
            if let Err(e) = r {
                st.error = Some(format!("queue feeder: {e}"));
                st.pending.clear();
            } else {
                st.pending.pop_front();
            }
            self.cv.notify_all();
        }
    }

    /// No more puts: the thread exits once everything pending is sent.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Messages still waiting to be sent by this process.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Wait until nothing is pending (or the feeder failed).
    pub fn flush(&self, ctx: &WaitCtx<'_>) -> Outcome {
        let mut st = self.lock();
        loop {
            if st.pending.is_empty() || st.error.is_some() {
                return Outcome::Notified;
            }
            let step = if ctx.interrupt.is_some() { ctx.slice } else { Duration::from_millis(100) };
            st = self.cv.wait_timeout(st, step).unwrap_or_else(|e| e.into_inner()).0;
            if ctx.interrupted() {
                return Outcome::Interrupted;
            }
            if ctx.expired() {
                return Outcome::TimedOut;
            }
        }
    }
}

