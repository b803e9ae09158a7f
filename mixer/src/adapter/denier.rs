//! The `denier` adapter: answers its configured status.

use std::time::Duration;

use serde_json::Value as Json;

use super::{CODE_NAMES, Verdict, duration_param, int_param};

/// Handler params: `status {code, message}`, `validDuration` (5s), `validUseCount` (1000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub code: i32,
    pub message: String,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let empty = Json::Null;
        let status = p.get("status").unwrap_or(&empty);
        let code = match status.get("code") {
            None | Some(Json::Null) => 7,
            Some(Json::Number(n)) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("params.status.code {n} is not a code"))?,
            Some(Json::String(s)) => CODE_NAMES
                .iter()
                .position(|c| c.eq_ignore_ascii_case(s))
                .map(|i| i as i32)
                .or_else(|| s.parse().ok())
                .ok_or_else(|| format!("params.status.code {s:?} is not a code"))?,
            Some(other) => return Err(format!("params.status.code {other} is not a code")),
        };
        let message = status
            .get("message")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let valid_duration = duration_param(
            p,
            &["validDuration", "valid_duration"],
            Duration::from_secs(5),
        )?;
        let valid_use_count = int_param(p, &["validUseCount", "valid_use_count"], 1000)?;
        Ok(Params {
            code,
            message,
            valid_duration,
            valid_use_count: i32::try_from(valid_use_count)
                .map_err(|_| format!("params.validUseCount {valid_use_count} is too large"))?,
        })
    }

    pub fn check(&self) -> Verdict {
        Verdict {
            code: self.code,
            message: self.message.clone(),
            valid_duration: self.valid_duration,
            valid_use_count: self.valid_use_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_forms() {
        let p = Params::parse(&json!({
            "status": {"code": "UNAUTHENTICATED", "message": "who?"},
            "validDuration": "1.5s",
            "validUseCount": 3
        }))
        .unwrap();
        assert_eq!(p.code, 16);
        assert_eq!(p.valid_duration, Duration::from_millis(1500));
        assert_eq!(p.valid_use_count, 3);
        assert_eq!(p.check().message, "who?");
        let d = Params::parse(&Json::Null).unwrap();
        assert_eq!((d.code, d.valid_use_count), (7, 1000));
        assert!(Params::parse(&json!({"status": {"code": "NOPE"}})).is_err());
        assert!(Params::parse(&json!({"validDuration": 5})).is_err());
    }
}
