//! The event loop's reactor: readiness polling, the timer heap, the ready
//! queue, poll pacing and the loop's clock.
//!
//! Each is a plain data structure driven by the loop's own thread; the
//! binding (`plait-py`'s `loop/`) owns one of each per loop and keeps the
//! Python objects (callbacks, handles) as the payloads. Nothing here knows
//! about Python.
//!
//! * [`poller`]: THE one epoll wrapper of the workspace. [`Epoll`] is the
//!   bare descriptor (register by token, wait into a reusable [`Events`]
//!   buffer); [`Poller`] adds asyncio's view on top (READ/WRITE interest
//!   remembered per descriptor, readiness masks as `EpollSelector` reports
//!   them). The loop's `Selector`, the native echo tools (`plait-echo`) and
//!   anything in the core that polls use it.
//! * [`timers`]: [`TimerHeap`], deadlines ordered by time, then by insertion.
//! * [`ready`]: [`ReadyQueue`], the FIFO of callbacks ready to run, taken a
//!   whole batch at a time.
//! * [`pace`]: [`Pace`], a cheap "has this long passed?" for deciding when
//!   to poll.
//! * [`clock`]: [`monotonic`], the loop's `time()`.

pub mod clock;
pub mod pace;
pub mod poller;
pub mod ready;
pub mod timers;

pub use clock::monotonic;
pub use pace::Pace;
pub use poller::{readiness, Epoll, Event, Events, Poller, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, READ, WRITE};
pub use ready::ReadyQueue;
pub use timers::TimerHeap;
