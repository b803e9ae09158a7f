//! Conversions between JSON values and `google.protobuf.Struct`, the body encoding of MCP
//! resources.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

/// A JSON object as a protobuf `Struct`.
pub fn to_struct(obj: &Map<String, Json>) -> Struct {
    Struct {
        fields: obj.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

/// A JSON value as a protobuf `Value`.
pub fn to_value(v: &Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(to_struct(o)),
    };
    Value { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(s: &Struct) -> Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_value(v)))
        .collect()
}

/// A protobuf `Value` as JSON. Whole numbers come back as integers, so ports and weights keep
/// their JSON type.
pub fn from_value(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Json::Object(from_struct(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_types() {
        let j = serde_json::json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": -7}});
        let Json::Object(obj) = &j else {
            panic!("object")
        };
        assert_eq!(Json::Object(from_struct(&to_struct(obj))), j);
    }
}
