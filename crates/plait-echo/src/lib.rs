//! plait-echo: the native load tools behind `python -m plait bench loop`.
//!
//! The event-loop benchmarks measure a Python echo server (asyncio, uvloop,
//! rloop, plait) by the messages per second a client gets through it. If the
//! client were Python, it would share the bottleneck it is meant to measure,
//! so the client is this crate's `plait-echo-client`: one thread, one epoll
//! set, N connections, each in a *closed loop* (send one message, wait for
//! all of its echo, send the next). `plait-echo-server` is the same idea on
//! the other side, a single-threaded epoll echo server written the way one
//! would write it in C: it is the limit an event loop can approach on the
//! machine, and the benchmark's reference column.
//!
//! Both pin themselves to a CPU (`--cpu N`, `sched_setaffinity`), so that on a
//! two-core machine the server under test and the client each own one core.
//! Both are bounded: the client fails after `--timeout` seconds, the server
//! exits when its standard input closes (`--exit-on-stdin-eof`, so it dies
//! with the harness that started it) or after `--max-seconds`.
//!
//! The client prints one JSON line, the harness's only contract with it:
//!
//! ```text
//! {"messages":20480,"seconds":0.250012,"rate":81916.0,"conns":10,"size":1024,"warmup":200,"cpu":1}
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod args;
pub mod client;
pub mod server;
pub mod sys;
