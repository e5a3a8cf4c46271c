//! `_SelectorMapping`: what `Selector.get_map()` returns, a live read-only
//! mapping of file descriptor (or file object) to `SelectorKey`, read
//! through the selector's own lookup.

use std::os::fd::RawFd;

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

use super::selector::Selector;
use super::Obj;

/// `selector.get_map()`: a live read-only mapping of fd (or file object)
/// to key.
#[pyclass(module = "plait.loop", name = "_SelectorMapping", frozen)]
pub struct SelectorMapping {
    pub(super) selector: Py<Selector>,
}

#[pymethods]
impl SelectorMapping {
    fn __len__(&self) -> usize {
        self.selector.get().st.lock().keys.len()
    }

    fn __getitem__(&self, fileobj: &Bound<'_, PyAny>) -> PyResult<Obj> {
        let py = fileobj.py();
        let sel = self.selector.get();
        let fd = sel.lookup(fileobj).map_err(|_| PyKeyError::new_err(format!("{} is not registered", fileobj.repr().map(|r| r.to_string()).unwrap_or_default())))?;
        match sel.st.lock().keys.get(&fd) {
            Some(r) => Ok(r.key.clone_ref(py)),
            None => Err(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?))),
        }
    }

    #[pyo3(signature = (fileobj, default = None))]
    fn get(&self, fileobj: &Bound<'_, PyAny>, default: Option<Obj>) -> PyResult<Obj> {
        let py = fileobj.py();
        match self.__getitem__(fileobj) {
            Ok(k) => Ok(k),
            Err(e) if e.is_instance_of::<PyKeyError>(py) => Ok(default.unwrap_or_else(|| py.None())),
            Err(e) => Err(e),
        }
    }

    fn __contains__(&self, fileobj: &Bound<'_, PyAny>) -> bool {
        self.__getitem__(fileobj).is_ok()
    }

    fn keys(&self) -> Vec<RawFd> {
        self.selector.get().st.lock().keys.keys().copied().collect()
    }

    fn values(&self, py: Python<'_>) -> Vec<Obj> {
        self.selector.get().st.lock().keys.values().map(|r| r.key.clone_ref(py)).collect()
    }

    fn items(&self, py: Python<'_>) -> Vec<(RawFd, Obj)> {
        self.selector.get().st.lock().keys.iter().map(|(fd, r)| (*fd, r.key.clone_ref(py))).collect()
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Obj> {
        let keys = self.keys();
        Ok(pyo3::types::PyList::new(py, keys)?.try_iter()?.into_any().unbind())
    }
}
