//! How fragment values become bytes. JSON by default.

use serde::{Serialize, de::DeserializeOwned};

/// A codec failure.
///
/// A fragment's value that does not decode reaches the handler as
/// [`Error::Decode`](crate::Error::Decode), with this as its source:
///
/// ```
/// use multisession::codec::{Codec, Json};
///
/// let error = Json::decode::<u32>(b"\"three\"").unwrap_err();
/// assert_eq!(error.codec, "json");
/// assert!(error.to_string().starts_with("json: invalid type"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{codec}: {message}")]
pub struct CodecError {
    /// The codec's name.
    pub codec: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CodecError {
    /// A failure of `codec`. What a custom [`Codec`] returns:
    ///
    /// ```
    /// use multisession::codec::{Codec, CodecError};
    /// use serde::{Serialize, de::DeserializeOwned};
    ///
    /// /// JSON, indented: easier to read in a database browser.
    /// struct PrettyJson;
    ///
    /// impl Codec for PrettyJson {
    ///     const NAME: &'static str = "pretty-json";
    ///
    ///     fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    ///         serde_json::to_vec_pretty(value).map_err(|e| CodecError::new(Self::NAME, e))
    ///     }
    ///
    ///     fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    ///         serde_json::from_slice(bytes).map_err(|e| CodecError::new(Self::NAME, e))
    ///     }
    /// }
    ///
    /// assert_eq!(PrettyJson::encode(&[1, 2]).unwrap(), b"[\n  1,\n  2\n]");
    /// let error = PrettyJson::decode::<u8>(b"300").unwrap_err();
    /// assert_eq!(error.codec, "pretty-json");
    /// ```
    ///
    /// Use it with `#[session(codec = PrettyJson)]`.
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

    /// Encodes a value at the end of `out` (what the runtime calls: a stored value's
    /// header comes first). The default appends what [`encode`](Codec::encode) gives;
    /// a codec that can write into a buffer overrides it and saves a copy.
    fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&Self::encode(value)?);
        Ok(())
    }

    /// Decodes a value.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON through `serde_json`: readable in any store browser. The default.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, codec::Json, stores::MemoryStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Cart {
///     items: Vec<String>,
/// }
///
/// #[derive(MultiSession)]
/// struct Bot {
///     #[session(codec = Json)] // the default, spelled out
///     cart: Cart,
/// }
///
/// let sessions = Bot::builder().default_store(MemoryStore::new()).build();
/// sessions.run(&ChatContext::new(1), async |s| {
///     s.cart().await?.items.push("margherita".into());
///     Ok::<_, multisession::Error>(())
/// }).await?;
/// let page = sessions.list("cart", None, 10).await?;
/// assert_eq!(page.entries, [("1".to_owned(), br#"{"items":["margherita"]}"#.to_vec())]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new(Self::NAME, e))
    }
}

/// Why stored bytes could not become a fragment value.
///
/// ```
/// use multisession::codec::{CodecError, DecodeFailure};
///
/// let too_new = DecodeFailure::TooNew { found: 3, supported: 2 };
/// assert_eq!(too_new.to_string(), "stored at version 3, but this program knows versions up to 2");
///
/// let bad: DecodeFailure = CodecError::new("json", "expected value").into();
/// assert_eq!(bad.to_string(), "json: expected value");
/// ```
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
///
/// ```
/// use multisession::codec::{VERSION_MAGIC, with_version};
///
/// assert_eq!(with_version(2, b"{}"), [&VERSION_MAGIC[..], &[0, 0, 0, 2], b"{}"].concat());
/// ```
pub const VERSION_MAGIC: &[u8; 4] = b"\0MSv";

/// Splits stored bytes into version and payload.
///
/// Bytes without the [`VERSION_MAGIC`] header are version 0, as they are:
///
/// ```
/// use multisession::codec::{split_version, with_version};
///
/// let stored = with_version(2, br#"{"pets":[]}"#);
/// assert_eq!(split_version(&stored), (2, &br#"{"pets":[]}"#[..]));
/// assert_eq!(split_version(b"[\"Rex\"]"), (0, &b"[\"Rex\"]"[..])); // from before any migration
/// ```
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
///
/// ```
/// use multisession::codec::with_version;
///
/// assert_eq!(with_version(1, b"7"), b"\0MSv\0\0\0\x017");
/// ```
pub fn with_version(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    write_version(version, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Appends the version header of `version` to `out` (the codec's bytes follow).
pub(crate) fn write_version(version: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(VERSION_MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
}
