//! Python object ⇄ task bytes. The first byte is a tag: `B` — the payload is an exact
//! `bytes` object, moved without pickling; `P` — a pickle (protocol 5) made by the Python
//! side's `dumps` and read by its `loads`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

const RAW: u8 = b'B';
const PICKLE: u8 = b'P';

/// The package's `dumps`/`loads` pair, handed over once.
pub struct Codec {
    pub dumps: Py<PyAny>,
    pub loads: Py<PyAny>,
}

impl Codec {
    /// Appends the encoding of `obj` to `out`.
    pub fn encode(&self, obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
        if let Ok(bytes) = obj.cast_exact::<PyBytes>() {
            out.reserve(bytes.as_bytes().len() + 1);
            out.push(RAW);
            out.extend_from_slice(bytes.as_bytes());
            return Ok(());
        }
        let pickled = self.dumps.bind(obj.py()).call1((obj,))?;
        let pickled = pickled.cast::<PyBytes>()?;
        out.reserve(pickled.as_bytes().len() + 1);
        out.push(PICKLE);
        out.extend_from_slice(pickled.as_bytes());
        Ok(())
    }

    /// The object `bytes` encodes.
    pub fn decode<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        match bytes.split_first() {
            Some((&RAW, rest)) => Ok(PyBytes::new(py, rest).into_any()),
            Some((&PICKLE, rest)) => self.loads.bind(py).call1((PyBytes::new(py, rest),)),
            _ => Err(pyo3::exceptions::PyValueError::new_err(
                "not a zerotasq payload (unknown tag)",
            )),
        }
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Codec {
        Codec {
            dumps: self.dumps.clone_ref(py),
            loads: self.loads.clone_ref(py),
        }
    }
}
