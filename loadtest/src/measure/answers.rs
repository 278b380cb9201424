//! `measure json-field` and `measure put-answer`: reading the relay's JSON answers for
//! `scripts/interop/tickets.sh`, which drives curl as a ticket's PUT and GET clients
//! (PROTOCOL §6) and keeps only the decisions about statuses, headers and digests.
//!
//! * `json-field FILE KEY` prints a top-level field of a JSON object (a string as it
//!   is, any other value as JSON, nothing for a missing or null one): the minted
//!   ticket.
//! * `put-answer FILE --status S [--bytes N]` exits 0 when the PUT's answer is an
//!   object whose `status` is `S` and whose `bytes` is a whole number (equal to `N` when
//!   given), else 1.

use serde_json::Value;

use crate::cli::{JsonFieldArgs, PutAnswerArgs};

/// Reads a JSON file.
fn read_json(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A top-level field as text (empty when missing or null).
pub fn field_text(body: &Value, key: &str) -> String {
    match body.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// True when `body` is `{"status": status, "bytes": n, …}` with `n` a whole number,
/// equal to `bytes` when given.
pub fn put_answer_ok(body: &Value, status: &str, bytes: Option<u64>) -> bool {
    let status_ok = body.get("status").and_then(Value::as_str) == Some(status);
    let got = body.get("bytes").and_then(Value::as_u64);
    status_ok && got.is_some() && (bytes.is_none() || got == bytes)
}

/// `measure json-field`.
pub fn json_field(args: &JsonFieldArgs) -> Result<i32, String> {
    println!("{}", field_text(&read_json(&args.file)?, &args.key));
    Ok(0)
}

/// `measure put-answer`.
pub fn put_answer(args: &PutAnswerArgs) -> Result<i32, String> {
    let ok = match read_json(&args.file) {
        Ok(body) => put_answer_ok(&body, &args.status, args.bytes),
        Err(why) => {
            eprintln!("{why}");
            false
        }
    };
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_prints_as_text_and_a_missing_one_as_nothing() {
        let minted = json!({"ticket": "rly_abc", "expires_in": 60, "gone": null});
        assert_eq!(field_text(&minted, "ticket"), "rly_abc");
        assert_eq!(field_text(&minted, "expires_in"), "60");
        assert_eq!(field_text(&minted, "gone"), "");
        assert_eq!(field_text(&minted, "nope"), "");
        assert_eq!(field_text(&json!(["ticket"]), "ticket"), "");
    }

    #[test]
    fn a_put_answer_needs_its_status_and_a_whole_byte_count() {
        let ok = json!({"bytes": 5, "status": "ok"});
        assert!(put_answer_ok(&ok, "ok", Some(5)));
        assert!(put_answer_ok(&ok, "ok", None));
        assert!(!put_answer_ok(&ok, "ok", Some(6)));
        assert!(!put_answer_ok(&ok, "error", None));
        let over = json!({"bytes": 100000, "status": "error"});
        assert!(put_answer_ok(&over, "error", None));
        assert!(!put_answer_ok(
            &json!({"bytes": "5", "status": "ok"}),
            "ok",
            None
        ));
        assert!(!put_answer_ok(
            &json!({"bytes": 1.5, "status": "error"}),
            "error",
            None
        ));
        assert!(!put_answer_ok(&json!({"status": "error"}), "error", None));
    }
}
