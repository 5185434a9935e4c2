//! How fragment values become bytes. JSON by default.

use serde::{Serialize, de::DeserializeOwned};

/// A codec failure.
#[derive(Debug, thiserror::Error)]
#[error("{codec}: {message}")]
pub struct CodecError {
    /// The codec's name.
    pub codec: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CodecError {
    /// A failure of `codec`.
    pub fn new(codec: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            codec,
            message: message.to_string(),
        }
    }
}

/// Turns values into bytes and back. Chosen per fragment with `#[session(codec = ...)]`.
///
/// ```
/// use multisession::codec::{Codec, Json};
///
/// let bytes = Json::encode(&vec![1, 2, 3]).unwrap();
/// assert_eq!(bytes, b"[1,2,3]");
/// let back: Vec<i32> = Json::decode(&bytes).unwrap();
/// assert_eq!(back, [1, 2, 3]);
/// assert!(Json::decode::<Vec<i32>>(b"\xff").is_err());
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The codec's name, for error messages.
    const NAME: &'static str;

    /// Encodes a value.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError>;

    /// Decodes a value.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON through `serde_json`: readable in any store browser. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new(Self::NAME, e))
    }
}

/// Why stored bytes could not become a fragment value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeFailure {
    /// The codec rejected the bytes.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The bytes were stored by a newer version of the program (more migrations).
    #[error("stored at version {found}, but this program knows versions up to {supported}")]
    TooNew {
        /// The stored version.
        found: u32,
        /// The newest version this program knows.
        supported: u32,
    },
}

/// The header of a value stored by a fragment with migrations: these four bytes, then the
/// version as a big-endian `u32`, then the codec's bytes. Values without it are version 0
/// (stored before the first migration existed). No JSON text starts with a NUL byte.
pub const VERSION_MAGIC: &[u8; 4] = b"\0MSv";

/// Splits stored bytes into version and payload.
pub fn split_version(bytes: &[u8]) -> (u32, &[u8]) {
    match bytes.strip_prefix(&VERSION_MAGIC[..]) {
        Some(rest) if rest.len() >= 4 => {
            let (version, payload) = rest.split_at(4);
            let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
            (version, payload)
        }
        _ => (0, bytes),
    }
}

/// Prefixes a payload with the version header.
pub fn with_version(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(VERSION_MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
