//! The QMP wire format: one JSON object per line. Pure functions, no I/O.

use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::QmpError;

/// What QEMU says first on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// `major.minor.micro`, e.g. `10.0.2`.
    pub version: String,
    /// Distribution package string, e.g. `Debian 1:10.0.2+ds-2`.
    pub package: String,
    /// Capabilities the server offers (e.g. `oob`); this client enables none.
    pub capabilities: Vec<String>,
}

/// An asynchronous event from QEMU (`STOP`, `RESUME`, `SHUTDOWN`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub event: String,
    /// The event's `data` object, `Value::Null` when it has none.
    pub data: Value,
    /// When QEMU emitted it (QEMU's clock).
    pub timestamp: SystemTime,
}

/// One line received after the greeting.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A reply to the command with this id: its `return` value, or its error class and text.
    Reply {
        id: Option<u64>,
        result: Result<Value, (String, String)>,
    },
    Event(QmpEvent),
}

/// Parses the greeting line.
pub fn parse_greeting(line: &str) -> Result<Greeting, QmpError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|error| QmpError::Protocol(format!("greeting is not json: {error}")))?;
    let qmp = value
        .get("QMP")
        .ok_or_else(|| QmpError::Protocol(format!("not a qmp greeting: {}", line.trim())))?;
    let version = &qmp["version"]["qemu"];
    let number = |key: &str| version.get(key).and_then(Value::as_u64).unwrap_or(0);
    Ok(Greeting {
        version: format!(
            "{}.{}.{}",
            number("major"),
            number("minor"),
            number("micro")
        ),
        package: qmp["version"]["package"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string(),
        capabilities: qmp["capabilities"]
            .as_array()
            .map(|caps| {
                caps.iter()
                    .filter_map(|cap| cap.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The line (without the newline) that runs `command` with request id `id`. `arguments` of
/// `Null` or an empty object sends no `arguments` member: some commands reject an empty one.
pub fn command_line(command: &str, arguments: &Value, id: u64) -> Result<String, QmpError> {
    let mut object = Map::new();
    object.insert("execute".into(), Value::String(command.into()));
    match arguments {
        Value::Null => {}
        Value::Object(map) if map.is_empty() => {}
        Value::Object(_) => {
            object.insert("arguments".into(), arguments.clone());
        }
        other => {
            return Err(QmpError::Protocol(format!(
                "arguments of {command} must be an object, not {other}"
            )));
        }
    }
    object.insert("id".into(), Value::from(id));
    Ok(Value::Object(object).to_string())
}

/// Classifies one received line.
pub fn parse_message(line: &str) -> Result<Message, QmpError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|error| QmpError::Protocol(format!("line is not json: {error}")))?;
    let id = value.get("id").and_then(Value::as_u64);
    if let Some(result) = value.get("return") {
        return Ok(Message::Reply {
            id,
            result: Ok(result.clone()),
        });
    }
    if let Some(error) = value.get("error") {
        let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default();
        return Ok(Message::Reply {
            id,
            result: Err((text("class").to_string(), text("desc").to_string())),
        });
    }
    if let Some(event) = value.get("event").and_then(Value::as_str) {
        let seconds = value["timestamp"]["seconds"].as_u64().unwrap_or(0);
        let micros = value["timestamp"]["microseconds"].as_u64().unwrap_or(0);
        return Ok(Message::Event(QmpEvent {
            event: event.to_string(),
            data: value.get("data").cloned().unwrap_or(Value::Null),
            timestamp: UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros),
        }));
    }
    Err(QmpError::Protocol(format!(
        "neither reply nor event: {}",
        line.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn greeting_of_qemu_10() {
        let line = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2"}, "capabilities": ["oob"]}}"#;
        let greeting = parse_greeting(line).expect("valid greeting");
        assert_eq!(greeting.version, "10.0.2");
        assert_eq!(greeting.package, "Debian 1:10.0.2+ds-2");
        assert_eq!(greeting.capabilities, vec!["oob".to_string()]);
    }

    #[test]
    fn greeting_rejects_other_lines() {
        for line in ["", "hello", r#"{"return": {}}"#] {
            assert!(
                matches!(parse_greeting(line), Err(QmpError::Protocol(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn command_lines() {
        let cases = [
            (json!(null), r#"{"execute":"stop","id":1}"#),
            (json!({}), r#"{"execute":"stop","id":1}"#),
            (
                json!({"a": 1}),
                r#"{"execute":"stop","arguments":{"a":1},"id":1}"#,
            ),
        ];
        for (arguments, expected) in cases {
            let line = command_line("stop", &arguments, 1).expect("object arguments");
            let got: Value = serde_json::from_str(&line).expect("json");
            let want: Value = serde_json::from_str(expected).expect("json");
            assert_eq!(got, want);
        }
        assert!(command_line("stop", &json!([1]), 1).is_err());
    }

    #[test]
    fn messages() {
        assert_eq!(
            parse_message(r#"{"return": {"status": "running"}, "id": 7}"#).expect("reply"),
            Message::Reply {
                id: Some(7),
                result: Ok(json!({"status": "running"}))
            }
        );
        assert_eq!(
            parse_message(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 3}"#)
                .expect("error reply"),
            Message::Reply {
                id: Some(3),
                result: Err(("GenericError".into(), "no".into()))
            }
        );
        let event = parse_message(
            r#"{"timestamp": {"seconds": 10, "microseconds": 5}, "event": "SHUTDOWN", "data": {"guest": true}}"#,
        )
        .expect("event");
        assert_eq!(
            event,
            Message::Event(QmpEvent {
                event: "SHUTDOWN".into(),
                data: json!({"guest": true}),
                timestamp: UNIX_EPOCH + Duration::from_micros(10_000_005),
            })
        );
        assert!(parse_message("{}").is_err());
        assert!(parse_message("not json").is_err());
    }
}
