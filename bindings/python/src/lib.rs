//! The Python package's native part, `keyward._fast`, built into the same
//! shared library as the C interface (`--features python`, by maturin
//! only). Everything else in the package goes through the C interface
//! with cffi; two things are here because a Python-level version costs
//! more than the call it wraps:
//!
//! - [`Gate`]: the calls in flight on one C handle, so that closing on one
//!   thread waits for a call running on another before the handle is
//!   freed (cffi releases the GIL during every call). Entering and leaving
//!   are two atomic operations instead of a Python lock taken twice.
//! - [`Gate::verify`]: `Store.verify` in one native call, answering with a
//!   [`Verdict`] built here. Input it does not take as it is (a key that is
//!   not `str`/`bytes`, an address that is not the text of one, a closed
//!   or forked handle) is answered with `None`, and the package goes the
//!   general way through the C interface, which reports the typed error.
//!   The verdict is the one `kw_verify` gives: one engine call, no storage.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString, PyTuple};

use keyward::{Denial, Verdict as EngineVerdict, VerifyRequest};
use keyward_ffi::kw_store;

/// The package's `Denial` members by number, and its function from
/// milliseconds since the epoch to an aware `datetime` (see [`bind`]).
static DENIALS: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
static DATETIME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Hands the module the package's `Denial` members (a tuple indexed by
/// number, `None` at 0) and a function from milliseconds since the epoch
/// to a `datetime`. Called once by the package at import.
#[pyfunction]
fn bind(py: Python<'_>, denials: Bound<'_, PyTuple>, datetime: Bound<'_, PyAny>) -> PyResult<()> {
    for d in Denial::ALL {
        let code = d.code() as usize;
        if denials.len() <= code || denials.get_item(code)?.is_none() {
            return Err(PyValueError::new_err(format!(
                "no Denial member for {} ({code})",
                d.as_str()
            )));
        }
    }
    let _ = DENIALS.set(py, denials.unbind());
    let _ = DATETIME.set(py, datetime.unbind());
    Ok(())
}

/// The answer of `Store.verify`. True when the key was admitted.
#[pyclass(module = "keyward", frozen)]
pub struct Verdict {
    #[pyo3(get)]
    valid: bool,
    #[pyo3(get)]
    denial: Py<PyAny>,
    #[pyo3(get)]
    key_id: Py<PyAny>,
    #[pyo3(get)]
    generation: u32,
    #[pyo3(get)]
    in_grace: bool,
    #[pyo3(get)]
    rotated_at: Py<PyAny>,
    /// The account the key belongs to; `None` when it has none (or no key
    /// has this id). Set on refusals too, whenever the key exists.
    #[pyo3(get)]
    owner: Py<PyAny>,
    /// For a rate-limited refusal: seconds until one more request fits.
    #[pyo3(get)]
    retry_after: Py<PyAny>,
    /// The admitted key's scopes (a tuple of str; empty on refusals).
    #[pyo3(get)]
    scopes: Py<PyTuple>,
}

#[pymethods]
impl Verdict {
    // The fields, in the order Python code passes them.
    #[allow(clippy::too_many_arguments)]
    #[new]
    #[pyo3(signature = (valid, denial, key_id, generation, in_grace = false, rotated_at = None, owner = None, retry_after = None, scopes = None))]
    fn new(
        valid: bool,
        denial: Py<PyAny>,
        key_id: Py<PyAny>,
        generation: u32,
        in_grace: bool,
        rotated_at: Option<Py<PyAny>>,
        owner: Option<Py<PyAny>>,
        retry_after: Option<Py<PyAny>>,
        scopes: Option<Bound<'_, PyAny>>,
        py: Python<'_>,
    ) -> PyResult<Self> {
        let scopes = match scopes {
            None => PyTuple::empty(py).unbind(),
            Some(s) => PyTuple::new(py, s.try_iter()?.collect::<PyResult<Vec<_>>>()?)?.unbind(),
        };
        Ok(Verdict {
            valid,
            denial,
            key_id,
            generation,
            in_grace,
            rotated_at: rotated_at.unwrap_or_else(|| py.None()),
            owner: owner.unwrap_or_else(|| py.None()),
            retry_after: retry_after.unwrap_or_else(|| py.None()),
            scopes,
        })
    }

    fn __bool__(&self) -> bool {
        self.valid
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Verdict>() else {
            return Ok(false);
        };
        let o = other.get();
        let same = |a: &Py<PyAny>, b: &Py<PyAny>| a.bind(py).eq(b.bind(py));
        Ok(self.valid == o.valid
            && self.generation == o.generation
            && self.in_grace == o.in_grace
            && same(&self.denial, &o.denial)?
            && same(&self.key_id, &o.key_id)?
            && same(&self.rotated_at, &o.rotated_at)?
            && same(&self.owner, &o.owner)?
            && same(&self.retry_after, &o.retry_after)?
            && self.scopes.bind(py).eq(o.scopes.bind(py))?)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let key_id = self.key_id.bind(py).repr()?;
        if self.valid {
            let grace = if self.in_grace { ", in_grace=True" } else { "" };
            let owner = self.owner.bind(py);
            let owner = if owner.is_none() {
                String::new()
            } else {
                format!(", owner={}", owner.repr()?)
            };
            Ok(format!(
                "Verdict(valid=True, key_id={key_id}, generation={}{grace}{owner})",
                self.generation
            ))
        } else {
            let denial = self.denial.bind(py).str()?;
            let retry = self.retry_after.bind(py);
            let retry = if retry.is_none() {
                String::new()
            } else {
                format!(", retry_after={}", retry.repr()?)
            };
            Ok(format!(
                "Verdict(valid=False, denial={denial}, key_id={key_id}{retry})"
            ))
        }
    }
}

/// The calls in flight on one C handle (see the module's comment).
#[pyclass(module = "keyward._fast", frozen)]
pub struct Gate {
    /// The `kw_store *`, as an address; 0 for none.
    store: usize,
    calls: AtomicUsize,
    closing: AtomicBool,
    idle_lock: Mutex<()>,
    idle: Condvar,
}

impl Gate {
    fn enter_call(&self) -> bool {
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            self.leave_call();
            return false;
        }
        true
    }

    fn leave_call(&self) {
        if self.calls.fetch_sub(1, Ordering::SeqCst) == 1 && self.closing.load(Ordering::SeqCst) {
            // Under the lock: a closer between its check and its wait
            // cannot miss this.
            let _guard = self
                .idle_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.idle.notify_all();
        }
    }
}

/// A verification as the native call takes it: the key's bytes, the
/// parsed address, the integration and the scope required.
type FastInput<'a> = (&'a [u8], IpAddr, Option<&'a str>, Option<&'a str>);

/// What verify takes as it is, or nothing (the general way then answers).
fn fast_input<'a>(
    key: &'a Bound<'_, PyAny>,
    ip: &Bound<'_, PyAny>,
    integration: Option<&'a Bound<'_, PyAny>>,
    scope: Option<&'a Bound<'_, PyAny>>,
) -> Option<FastInput<'a>> {
    let key = if let Ok(s) = key.cast::<PyString>() {
        s.to_str().ok()?.as_bytes()
    } else {
        key.cast::<PyBytes>().ok()?.as_bytes()
    };
    let ip = ip.cast::<PyString>().ok()?.to_str().ok()?.parse().ok()?;
    Some((key, ip, optional_text(integration)?, optional_text(scope)?))
}

/// `None` or a str without NUL as `Some(text)`; anything else `None`
/// (outer: the general way answers).
#[allow(clippy::option_option)]
fn optional_text<'a>(value: Option<&'a Bound<'_, PyAny>>) -> Option<Option<&'a str>> {
    match value {
        None => Some(None),
        Some(v) if v.is_none() => Some(None),
        Some(v) => {
            let text = v.cast::<PyString>().ok()?.to_str().ok()?;
            (!text.contains('\0')).then_some(Some(text))
        }
    }
}

#[pymethods]
impl Gate {
    #[new]
    fn new(store: usize) -> Self {
        Gate {
            store,
            calls: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
        }
    }

    /// Starts a call: false once the handle is closing.
    fn enter(&self) -> bool {
        self.enter_call()
    }

    /// Ends a call begun by a successful `enter`.
    fn leave(&self) {
        self.leave_call();
    }

    /// The calls in flight now.
    #[getter]
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether the handle is closing (or closed).
    #[getter]
    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Refuses new calls and waits for those in flight, for at most
    /// `timeout` seconds (`None`: as long as they take). True when the
    /// caller may now free the handle: it was the first to close and no
    /// call is running.
    #[pyo3(signature = (timeout = None))]
    fn take(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        if self.closing.swap(true, Ordering::SeqCst) {
            return false;
        }
        let deadline = timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| Instant::now() + Duration::from_secs_f64(t.min(1e9)));
        py.detach(|| {
            let mut guard = self
                .idle_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while self.calls.load(Ordering::SeqCst) != 0 {
                guard = match deadline {
                    None => self
                        .idle
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return false;
                        }
                        self.idle
                            .wait_timeout(guard, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
            }
            true
        })
    }

    /// `Store.verify`, or `None` when the general way must answer (see
    /// the module's comment).
    #[pyo3(signature = (key, ip, integration = None, scope = None))]
    fn verify(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ip: &Bound<'_, PyAny>,
        integration: Option<&Bound<'_, PyAny>>,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Verdict>> {
        let Some((bytes, ip, integration, scope)) = fast_input(key, ip, integration, scope) else {
            return Ok(None);
        };
        if !self.enter_call() {
            return Ok(None);
        }
        // SAFETY: entered, so the handle is not being freed; it came from
        // kw_store_open.
        let handle = unsafe { &*(self.store as *const kw_store) };
        if handle.forked() {
            self.leave_call();
            return Ok(None);
        }
        let store = handle.store();
        // The key is read while other threads run: it is borrowed from a
        // str or bytes object, which is immutable and kept alive by this
        // call's arguments.
        let verdict = py.detach(|| {
            store.verify_request(
                &VerifyRequest::new(bytes, ip)
                    .integration(integration)
                    .scope(scope),
            )
        });
        self.leave_call();
        Ok(Some(answer(py, &verdict)?))
    }
}

fn answer(py: Python<'_>, verdict: &EngineVerdict) -> PyResult<Verdict> {
    let none = || py.None();
    let text = |s: &str| PyString::new(py, s).into_any().unbind();
    let owner = verdict.owner().map_or_else(none, |o| text(o));
    let key_id = verdict.key_id().map_or_else(none, |id| text(id.as_str()));
    Ok(match verdict {
        EngineVerdict::Valid(g) => Verdict {
            valid: true,
            denial: none(),
            key_id,
            generation: g.generation,
            in_grace: g.in_grace,
            rotated_at: none(),
            owner,
            retry_after: none(),
            scopes: PyTuple::new(py, g.scopes().iter().collect::<Vec<_>>())?.unbind(),
        },
        EngineVerdict::Denied(r) => {
            let d = &r.denial;
            let denials = DENIALS
                .get(py)
                .ok_or_else(|| PyValueError::new_err("keyward._fast.bind was not called"))?;
            let rotated_at = match d {
                Denial::Rotated { at } => match DATETIME.get(py) {
                    Some(f) => f.call1(py, (at.unix_millis(),))?,
                    None => none(),
                },
                _ => none(),
            };
            Verdict {
                valid: false,
                denial: denials.bind(py).get_item(d.code() as usize)?.unbind(),
                key_id,
                generation: 0,
                in_grace: false,
                rotated_at,
                owner,
                retry_after: d.retry_after().map_or_else(none, |s| {
                    s.into_pyobject(py)
                        .map_or_else(|_| none(), |f| f.into_any().unbind())
                }),
                scopes: PyTuple::empty(py).unbind(),
            }
        }
    })
}

#[pymodule]
fn _fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bind, m)?)?;
    m.add_class::<Gate>()?;
    m.add_class::<Verdict>()?;
    Ok(())
}
