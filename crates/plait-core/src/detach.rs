//! How the core leaves the interpreter around a blocking section.
//!
//! The core knows nothing of Python, but some operations interleave code
//! that must run attached to the interpreter (a Barrier's action, a
//! PriorityQueue's comparisons) with waits that must not. They take a
//! [`Detach`]: the binding implements it with `Python::detach`, plain Rust
//! callers with [`Inline`].

/// Runs a blocking closure outside the interpreter.
pub trait Detach {
    fn detach<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R;
}

/// For callers that are not attached to anything: run the closure as is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl Detach for Inline {
    #[inline]
    fn detach<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        f()
    }
}
