//! Python object ⇄ task bytes. The first byte is a tag:
//! - `B` — the payload is an exact `bytes` object, moved without pickling;
//! - `P` — an in-band pickle (protocol 5; the C pickler, or the package's `dumps` — with
//!   cloudpickle — for what the C pickler refuses or, on the caller's side, pickles by a
//!   reference to `__main__`);
//! - `O` — a protocol-5 pickle with out-of-band buffers (numpy arrays and other objects
//!   that hand their memory to `buffer_callback`): `n: u32`, the pickle's length and each
//!   buffer's length (`u64`, little-endian), the pickle, then the buffers. The buffers are
//!   copied once, straight from the object's memory into the task, and read back as
//!   `memoryview` slices of one `bytearray`, without a further copy.
//!
//! A fourth tag, `K`, marks a pack of items and its answer (see
//! [`packing`](crate::packing)).
//!
//! A worker puts `T` and its busy time for the task (`u64` nanoseconds) before a result's
//! tag, so the client learns how long tasks take (see [`packing`](crate::packing)).
//!
//! Every step is one C-level call per item: no Python-level wrapper runs on the fast path.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PySlice, PyTuple};

const RAW: u8 = b'B';
const PICKLE: u8 = b'P';
const OUT_OF_BAND: u8 = b'O';
const TIMED: u8 = b'T';

/// Results at least this large are turned into a Python object straight from the received
/// frame (one copy), instead of being copied out first.
pub const BIG: usize = 64 << 10;

/// Python's pickler plus the package's fallback `dumps`/`loads`.
pub struct Codec {
    /// The package's `dumps` (cloudpickle when plain pickle refuses).
    fallback_dumps: Py<PyAny>,
    /// `pickle.dumps` (C).
    dumps: Py<PyAny>,
    /// `pickle.loads` (C), or the package's `loads` if it is not `pickle.loads`.
    loads: Py<PyAny>,
    /// `{"protocol": 5, "buffer_callback": buffers.append}`.
    dumps_kwargs: Py<PyDict>,
    /// `{"protocol": 5}`.
    protocol: Py<PyDict>,
    /// Out-of-band buffers of the object being pickled.
    buffers: Py<PyList>,
    /// Re-pickle by value (the fallback) what refers to `__main__`: a worker's `__main__` is
    /// not the caller's, so instances of classes defined in the caller's script would not
    /// load there by reference. Set on the caller's side only.
    main_by_value: bool,
}

/// Whether a pickle names the module `__main__` (a cheap scan; a false hit only costs a
/// slower pickle).
fn refers_to_main(pickled: &[u8]) -> bool {
    memchr::memmem::find(pickled, b"__main__").is_some()
}

/// A result as received, before it becomes a Python object under the GIL.
pub enum Received {
    /// A small payload, copied out of the frame (tag included).
    Small(Vec<u8>),
    /// A big exact `bytes` payload, already an object.
    Raw(Py<PyBytes>),
    /// A big in-band pickle, to be loaded.
    Pickle(Py<PyBytes>),
    /// A big pickle with out-of-band buffers (tag excluded), to be loaded.
    OutOfBand(Py<PyByteArray>),
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// Starts a timed result in `out`; [`end_timed`] fills in the time.
pub fn start_timed(out: &mut Vec<u8>) {
    out.push(TIMED);
    out.extend_from_slice(&[0; 8]);
}

/// Fills in the busy time of a result begun with [`start_timed`].
pub fn end_timed(out: &mut [u8], busy: Duration) {
    if let Some(at) = out.get_mut(1..9) {
        at.copy_from_slice(&(busy.as_nanos() as u64).to_le_bytes());
    }
}

/// A result's busy time, if the worker gave one, and the rest.
pub fn split_timed(bytes: &[u8]) -> (Option<Duration>, &[u8]) {
    match bytes.split_first() {
        Some((&TIMED, rest)) if rest.len() >= 8 => {
            let (time, rest) = rest.split_at(8);
            let nanos = u64::from_le_bytes(time.try_into().expect("8 bytes"));
            (Some(Duration::from_nanos(nanos)), rest)
        }
        _ => (None, bytes),
    }
}

fn bad_payload() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("not a zerotasq payload (unknown tag or bad length)")
}

impl Codec {
    /// `dumps`/`loads` are the package's (cloudpickle-aware) functions.
    pub fn new(py: Python<'_>, fallback_dumps: Py<PyAny>, loads: Py<PyAny>) -> PyResult<Codec> {
        // The C pickler alone: `pickle` imports re, enum and struct too (start-up).
        let pickle = py.import("_pickle")?;
        let buffers = PyList::empty(py);
        let kwargs = PyDict::new(py);
        kwargs.set_item("protocol", 5)?;
        kwargs.set_item("buffer_callback", buffers.getattr("append")?)?;
        let protocol = PyDict::new(py);
        protocol.set_item("protocol", 5)?;
        Ok(Codec {
            protocol: protocol.unbind(),
            fallback_dumps,
            dumps: pickle.getattr("dumps")?.unbind(),
            loads,
            dumps_kwargs: kwargs.unbind(),
            buffers: buffers.unbind(),
            main_by_value: false,
        })
    }

    /// The caller's codec: what refers to its `__main__` is pickled by value.
    pub fn for_caller(
        py: Python<'_>,
        fallback_dumps: Py<PyAny>,
        loads: Py<PyAny>,
    ) -> PyResult<Codec> {
        Ok(Codec {
            main_by_value: true,
            ..Codec::new(py, fallback_dumps, loads)?
        })
    }

    /// `obj` pickled in-band (protocol 5, no out-of-band buffers), with the fallback `dumps`
    /// when the C pickler refuses: the body of a pack and of its answer.
    pub fn pickle_in_band(&self, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let py = obj.py();
        let pickled = match self
            .dumps
            .bind(py)
            .call((obj,), Some(self.protocol.bind(py)))
        {
            Ok(p) => p,
            Err(_) => self.fallback_dumps.bind(py).call1((obj,))?,
        };
        Ok(pickled.cast::<PyBytes>()?.as_bytes().to_vec())
    }

    /// The object a pickle encodes (`loads`).
    pub fn unpickle<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.loads.bind(py).call1((PyBytes::new(py, bytes),))
    }

    /// The package's `loads`.
    pub fn loads<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.loads.bind(py)
    }

    /// Appends the encoding of `obj` to `out`.
    pub fn encode(&self, obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        let py = obj.py();
        if let Ok(bytes) = obj.cast_exact::<PyBytes>() {
            out.reserve(bytes.as_bytes().len() + 1);
            out.push(RAW);
            out.extend_from_slice(bytes.as_bytes());
            return Ok(());
        }
        let buffers = self.buffers.bind(py);
        let pickled = match self
            .dumps
            .bind(py)
            .call((obj,), Some(self.dumps_kwargs.bind(py)))
        {
            Ok(p) if !(self.main_by_value && refers_to_main(p.cast::<PyBytes>()?.as_bytes())) => p,
            _ => {
                buffers.call_method0(pyo3::intern!(py, "clear"))?;
                self.fallback_dumps.bind(py).call1((obj,))?
            }
        };
        let pickled = pickled.cast::<PyBytes>()?.as_bytes();
        if buffers.is_empty() {
            out.reserve(pickled.len() + 1);
            out.push(PICKLE);
            out.extend_from_slice(pickled);
            return Ok(());
        }
        let taken: Vec<Bound<'_, PyAny>> = buffers.iter().collect();
        buffers.call_method0(pyo3::intern!(py, "clear"))?;
        let mut views = Vec::with_capacity(taken.len());
        for b in &taken {
            // PickleBuffer.raw(): a contiguous, one-dimensional byte view of the memory (a
            // BufferError for memory that is not contiguous).
            let raw = b.call_method0(pyo3::intern!(py, "raw"))?;
            let len: usize = raw.getattr(pyo3::intern!(py, "nbytes"))?.extract()?;
            views.push((raw, len));
        }
        let total: usize = views.iter().map(|(_, len)| len).sum();
        out.reserve(1 + 4 + 8 * (views.len() + 1) + pickled.len() + total);
        out.push(OUT_OF_BAND);
        out.extend_from_slice(&(views.len() as u32).to_le_bytes());
        out.extend_from_slice(&(pickled.len() as u64).to_le_bytes());
        for (_, len) in &views {
            out.extend_from_slice(&(*len as u64).to_le_bytes());
        }
        out.extend_from_slice(pickled);
        for (raw, len) in &views {
            append_view(out, raw, *len)?;
        }
        Ok(())
    }

    /// The object `bytes` encodes.
    pub fn decode<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        match split_timed(bytes).1.split_first() {
            Some((&RAW, rest)) => Ok(PyBytes::new(py, rest).into_any()),
            Some((&PICKLE, rest)) => self.loads.bind(py).call1((PyBytes::new(py, rest),)),
            Some((&OUT_OF_BAND, rest)) => self.load_out_of_band(&PyByteArray::new(py, rest)),
            _ => Err(bad_payload()),
        }
    }

    /// Keeps a result's bytes for [`Codec::finish`]: small ones copied out, big ones turned
    /// into a Python object at once (taking the GIL), so they are copied only once. With the
    /// worker's busy time for it, when given.
    pub fn receive(bytes: &[u8]) -> (Option<Duration>, Received) {
        let (busy, bytes) = split_timed(bytes);
        let received = match bytes.split_first() {
            Some((&tag, rest)) if rest.len() >= BIG => Python::attach(|py| match tag {
                RAW => Received::Raw(PyBytes::new(py, rest).unbind()),
                PICKLE => Received::Pickle(PyBytes::new(py, rest).unbind()),
                OUT_OF_BAND => Received::OutOfBand(PyByteArray::new(py, rest).unbind()),
                _ => Received::Small(bytes.to_vec()),
            }),
            _ => Received::Small(bytes.to_vec()),
        };
        (busy, received)
    }

    /// The object a [`Received`] result encodes.
    pub fn finish<'py>(&self, py: Python<'py>, got: Received) -> PyResult<Bound<'py, PyAny>> {
        match got {
            Received::Small(bytes) => self.decode(py, &bytes),
            Received::Raw(b) => Ok(b.into_bound(py).into_any()),
            Received::Pickle(b) => self.loads.bind(py).call1((b,)),
            Received::OutOfBand(b) => self.load_out_of_band(b.bind(py)),
        }
    }

    fn load_out_of_band<'py>(&self, data: &Bound<'py, PyByteArray>) -> PyResult<Bound<'py, PyAny>> {
        let py = data.py();
        // SAFETY: read while the GIL is held; nothing resizes the bytearray meanwhile.
        let (n, pickle_len, lens) = {
            let b = unsafe { data.as_bytes() };
            let n = read_u32(b, 0).ok_or_else(bad_payload)? as usize;
            let pickle_len = read_u64(b, 4).ok_or_else(bad_payload)?;
            let lens = (0..n)
                .map(|i| read_u64(b, 12 + 8 * i))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(bad_payload)?;
            let total = lens.iter().try_fold(pickle_len, |a, l| a.checked_add(*l));
            if total.and_then(|t| t.checked_add(12 + 8 * n)) != Some(b.len()) {
                return Err(bad_payload());
            }
            (n, pickle_len, lens)
        };
        let view = PyMemoryView::from(data.as_any())?;
        let slice = |from: usize, to: usize| -> PyResult<Bound<'py, PyAny>> {
            view.get_item(PySlice::new(py, from as isize, to as isize, 1))
        };
        let mut at = 12 + 8 * n;
        let pickle = slice(at, at + pickle_len)?;
        at += pickle_len;
        let mut buffers = Vec::with_capacity(n);
        for len in lens {
            buffers.push(slice(at, at + len)?);
            at += len;
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("buffers", PyTuple::new(py, buffers)?)?;
        self.loads.bind(py).call((pickle,), Some(&kwargs))
    }
}

/// `PyMemoryView_FromMemory`'s flag for a writable view (CPython's `PyBUF_WRITE`, which pyo3
/// exports only for builds that have the buffer protocol).
const PYBUF_WRITE: std::ffi::c_int = 0x200;

/// Appends the `len` bytes of the byte view `raw` to `out`, copied once, by assigning it to a
/// memoryview of `out`'s spare room: the stable ABI has no buffer protocol before Python 3.11
/// (the wheel is abi3 for 3.9+), but it has memoryviews of given memory.
fn append_view(out: &mut Vec<u8>, raw: &Bound<'_, PyAny>, len: usize) -> PyResult<()> {
    let py = raw.py();
    out.reserve(len);
    let start = out.len();
    // SAFETY: `len` writable bytes of `out`'s spare capacity; the view is released below,
    // before `out` is touched again, and nothing else holds it.
    let room = unsafe {
        let mem = out.as_mut_ptr().add(start).cast::<std::ffi::c_char>();
        let view = pyo3::ffi::PyMemoryView_FromMemory(mem, len as isize, PYBUF_WRITE);
        Bound::from_owned_ptr_or_err(py, view)?
    };
    let copied = room.set_item(PySlice::full(py), raw);
    room.call_method0(pyo3::intern!(py, "release"))?;
    copied?;
    // SAFETY: the assignment wrote all `len` bytes (a view of another length is an error).
    unsafe { out.set_len(start + len) };
    Ok(())
}
