//! Thread identity: the same number `threading.get_ident()` returns.
//!
//! On POSIX CPython's thread ident is `pthread_self()`; using the same value
//! lets Python code and `plait.debug` name owners and waiters directly.

/// The calling thread's `threading.get_ident()`.
#[inline]
pub fn ident() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    (unsafe { libc::pthread_self() }) as u64
}
