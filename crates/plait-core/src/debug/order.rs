//! Lock order (lockdep-style): which lock classes are taken while others
//! are held, and the first time an order inverts.
//!
//! A lock's class is its name (the creation site unless named): every lock
//! made at one line of code is one class, as in Linux's lockdep.

use std::collections::HashMap;

use crate::spin::SpinMutex;

struct Classes {
    ids: Option<HashMap<Box<str>, u32>>,
    names: Vec<Box<str>>,
}

static CLASSES: SpinMutex<Classes> = SpinMutex::new(Classes { ids: None, names: Vec::new() });

/// The class id of `name`, allocated on first use.
pub fn intern(name: &str) -> u32 {
    let mut c = CLASSES.lock();
    if let Some(id) = c.ids.as_ref().and_then(|m| m.get(name)) {
        return *id;
    }
    let id = u32::try_from(c.names.len()).unwrap_or(u32::MAX);
    c.names.push(name.into());
    c.ids.get_or_insert_with(HashMap::new).insert(name.into(), id);
    id
}

/// The name of class `id`.
pub fn class_name(id: u32) -> String {
    CLASSES.lock().names.get(id as usize).map_or_else(String::new, |s| s.to_string())
}

/// Make the class table usable in a forked child.
///
/// # Safety
/// Only from the atfork child handler, while the child is single-threaded.
pub unsafe fn after_fork() {
    if CLASSES.is_locked() {
        // SAFETY: the child has one thread; the holder of this mutex at the
        // fork does not exist here and never unlocks it.
        unsafe { CLASSES.force_unlock() };
    }
}
