//! Change detection (rule S22): whether two encoded values are the same value.

use serde_json::Value;

/// Whether `a` and `b` hold the same bytes, in any order (a cheap test that rules out
/// nearly every real change before anything is decoded).
pub(crate) fn same_bytes_in_any_order(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Equal sums first: a changed number or string nearly always changes the sum, and
    // the sums cost far less than counting every byte value.
    let sum = |bytes: &[u8]| bytes.iter().fold(0u64, |sum, &b| sum + u64::from(b));
    if sum(a) != sum(b) {
        return false;
    }
    let mut counts = [0i32; 256];
    for (&x, &y) in a.iter().zip(b) {
        counts[usize::from(x)] += 1;
        counts[usize::from(y)] -= 1;
    }
    counts.iter().all(|&c| c == 0)
}

/// Whether `a` and `b` hold the same content with every map and every sequence taken in
/// any order (sequences as multisets).
pub(crate) fn equal_in_any_order(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| equal_in_any_order(x, y)))
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return false;
            }
            let mut unmatched: Vec<&Value> = b.iter().collect();
            a.iter().all(
                |x| match unmatched.iter().position(|y| equal_in_any_order(x, y)) {
                    Some(at) => {
                        unmatched.swap_remove(at);
                        true
                    }
                    None => false,
                },
            )
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn permutations_of_bytes() {
        assert!(same_bytes_in_any_order(
            br#"{"a":1,"b":2}"#,
            br#"{"b":2,"a":1}"#
        ));
        assert!(!same_bytes_in_any_order(
            br#"{"count":5}"#,
            br#"{"count":6}"#
        ));
        assert!(!same_bytes_in_any_order(b"ab", b"abc"));
    }

    #[test]
    fn order_does_not_matter_content_does() {
        assert!(equal_in_any_order(
            &json!({"a": [1, 2, {"x": [3, 4]}], "b": 1}),
            &json!({"b": 1, "a": [{"x": [4, 3]}, 2, 1]})
        ));
        assert!(!equal_in_any_order(&json!([1, 1, 2]), &json!([1, 2, 2])));
        assert!(!equal_in_any_order(
            &json!({"a": 1}),
            &json!({"a": 1, "b": 2})
        ));
        assert!(!equal_in_any_order(&json!([1]), &json!([1.5])));
    }
}
