//! Stored bytes, taken apart and put together again.
//!
//! A value the runtime stores is `[\0MSu header: the updates that changed it]`, then
//! `[\0MSv header: the migration version]`, then the codec's bytes (JSON by default).
//! Both headers are optional.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use multisession::{codec, envelope};

/// A stored value, taken apart.
pub struct Decoded<'a> {
    /// The `\0MSu` header (empty if none), kept as it is by an edit.
    pub envelope: &'a [u8],
    /// The update ids it records, oldest first.
    pub updates: Vec<u64>,
    /// The migration version (0 without a header).
    pub version: u32,
    /// Whether there is a `\0MSv` header.
    pub has_version: bool,
    /// The codec's bytes.
    pub body: &'a [u8],
    /// The body as pretty JSON, if it is JSON; else why not.
    pub json: Result<String, String>,
}

impl<'a> Decoded<'a> {
    pub fn new(stored: &'a [u8]) -> Self {
        let (updates, payload) = envelope::split(stored);
        let envelope = &stored[..stored.len() - payload.len()];
        let (version, body) = codec::split_version(payload);
        Decoded {
            envelope,
            updates: updates.iter().collect(),
            version,
            has_version: body.len() < payload.len(),
            body,
            json: reformat(body, true),
        }
    }

    /// The body as base64 (for a value that is not JSON).
    pub fn body_base64(&self) -> String {
        STANDARD.encode(self.body)
    }

    /// The stored bytes of `json` (compact JSON) in place of this value's body: the same
    /// recorded updates, and the version header unless `version` says otherwise.
    pub fn with_body(&self, json: &[u8], version: Option<u32>) -> Vec<u8> {
        let mut out = self.envelope.to_vec();
        match version {
            Some(0) => {}
            Some(v) => out.extend_from_slice(&codec::with_version(v, b"")),
            None if self.has_version => {
                out.extend_from_slice(&codec::with_version(self.version, b""))
            }
            None => {}
        }
        out.extend_from_slice(json);
        out
    }
}

/// The stored bytes of a first value (no recorded updates).
pub fn new_value(json: &[u8], version: Option<u32>) -> Vec<u8> {
    Decoded::new(b"").with_body(json, version)
}

/// Re-encodes JSON text, keeping the order of object keys: indented (`pretty`) or
/// compact. An error says why it is not JSON.
pub fn reformat(json: &[u8], pretty: bool) -> Result<String, String> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = if pretty {
        let mut ser = serde_json::Serializer::pretty(&mut out);
        serde_transcode::transcode(&mut de, &mut ser)
    } else {
        let mut ser = serde_json::Serializer::new(&mut out);
        serde_transcode::transcode(&mut de, &mut ser)
    };
    result.map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// "1h 2m 3s"-style remaining time.
pub fn human_duration(d: Duration) -> String {
    let total = d.as_secs();
    if total == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_and_kept() {
        let payload = codec::with_version(3, br#"{"b":1,"a":[true]}"#);
        let stored = envelope::join(envelope::split(b"").0, 77, 32, &payload);
        let decoded = Decoded::new(&stored);
        assert_eq!(decoded.updates, [77]);
        assert_eq!(decoded.version, 3);
        assert!(decoded.has_version);
        assert_eq!(decoded.body, br#"{"b":1,"a":[true]}"#);
        assert_eq!(
            decoded.json.as_deref().unwrap(),
            "{\n  \"b\": 1,\n  \"a\": [\n    true\n  ]\n}"
        );
        let edited = decoded.with_body(b"{}", None);
        let again = Decoded::new(&edited);
        assert_eq!(
            (again.updates, again.version, again.body),
            (vec![77], 3, &b"{}"[..])
        );
        let bumped = Decoded::new(&stored).with_body(b"1", Some(4));
        assert_eq!(Decoded::new(&bumped).version, 4);
    }

    #[test]
    fn plain_and_binary_values() {
        let plain = Decoded::new(b"[1,2]");
        assert!(plain.updates.is_empty() && !plain.has_version && plain.version == 0);
        assert_eq!(plain.with_body(b"3", None), b"3");
        let binary = Decoded::new(b"\x01\xff\x00");
        assert!(binary.json.is_err());
        assert_eq!(binary.body_base64(), "Af8A");
        assert!(reformat(b"{} trailing", false).is_err());
        assert_eq!(
            reformat(b" { \"z\" : 1, \"a\": 2 } ", false).unwrap(),
            r#"{"z":1,"a":2}"#
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(3723)), "1h 2m 3s");
        assert_eq!(human_duration(Duration::from_secs(86_400 + 5)), "1d 5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    }
}
