//! Serialisation of the Rust face's tasks and outputs (postcard over serde). The wire never
//! sees these types: it carries the bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ErrorKind, TaskError};

/// Appends the encoding of `value` to `out` (on error, `out` may hold a partial encoding).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), TaskError> {
    postcard::to_io(value, out)
        .map(|_| ())
        .map_err(|e| TaskError::new(ErrorKind::Codec, format!("cannot encode: {e}")))
}

/// Encodes a value as postcard bytes; a value serde cannot encode is a [`ErrorKind::Codec`] error.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, TaskError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes postcard bytes; bytes that are not a `T` are a [`ErrorKind::Codec`] error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    postcard::from_bytes(bytes)
        .map_err(|e| TaskError::new(ErrorKind::Codec, format!("cannot decode: {e}")))
}
