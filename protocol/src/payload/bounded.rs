//! JSON parsed within limits: a body's parse cannot grow without bound.
//!
//! A 16 MiB body of small array elements (`[1,1,1,…]`) parses into some
//! eight million `serde_json::Value`s, about 20 times its size. These
//! functions parse into the same `Value`, but count every value and every
//! level of nesting as they go and stop at the first one past its limit,
//! before allocating for it. The count is returned, so a caller can charge
//! the parse's memory to a budget.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::DecodeError;

/// Limits on what one JSON body may parse into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
    /// Most values (scalars, arrays, objects, and object keys) in all.
    pub max_elements: usize,
}

impl Default for JsonLimits {
    /// 64 levels, 1,048,576 values.
    fn default() -> JsonLimits {
        JsonLimits {
            max_depth: 64,
            max_elements: 1 << 20,
        }
    }
}

/// What a bounded parse produced, besides its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JsonCost {
    /// Values parsed (scalars, arrays, objects and keys).
    pub elements: usize,
    /// Bytes of string data (values and keys).
    pub string_bytes: usize,
}

impl JsonCost {
    /// Bytes of `size_of::<Value>()` (and map entry overhead) a parsed value
    /// holds per element, used to charge a parse to a memory budget.
    pub const BYTES_PER_ELEMENT: usize = 80;

    /// An upper estimate of the heap the parsed value holds.
    pub fn estimated_bytes(&self) -> usize {
        self.elements
            .saturating_mul(JsonCost::BYTES_PER_ELEMENT)
            .saturating_add(self.string_bytes)
    }
}

struct Counter {
    limits: JsonLimits,
    depth: usize,
    cost: JsonCost,
    /// The limit that stopped the parse, to report it as `limit_exceeded`.
    exceeded: Option<(&'static str, usize, usize)>,
}

impl Counter {
    fn count<E: de::Error>(&mut self, string_bytes: usize) -> Result<(), E> {
        self.cost.elements += 1;
        self.cost.string_bytes = self.cost.string_bytes.saturating_add(string_bytes);
        if self.cost.elements > self.limits.max_elements {
            self.exceeded = Some(("JSON values", self.cost.elements, self.limits.max_elements));
            return Err(E::custom("too many JSON values"));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            self.exceeded = Some(("JSON nesting depth", self.depth, self.limits.max_depth));
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(())
    }
}

struct Seed<'a>(&'a mut Counter);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key, counted.
struct Key<'a>(&'a mut Counter);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        self.0.count::<D::Error>(key.len())?;
        Ok(key)
    }
}

use serde::Deserialize;

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.count(0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.count(0)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.count(0)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.count(0)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.count(v.len())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.count(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.count(0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.count::<A::Error>(0)?;
        self.0.enter::<A::Error>()?;
        // No size hint is trusted: the vector grows with what was counted.
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed(&mut *self.0))? {
            out.push(v);
        }
        self.0.depth -= 1;
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.count::<A::Error>(0)?;
        self.0.enter::<A::Error>()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key(&mut *self.0))? {
            let v = map.next_value_seed(Seed(&mut *self.0))?;
            out.insert(k, v);
        }
        self.0.depth -= 1;
        Ok(Value::Object(out))
    }
}

/// Parses `bytes` as one JSON value within `limits`.
///
/// # Errors
/// `limit_exceeded` naming the limit when the body has more values or
/// deeper nesting than allowed; `invalid_json` for anything else that is
/// not one JSON value.
pub fn parse_json_bounded(
    what: &'static str,
    bytes: &[u8],
    limits: JsonLimits,
) -> Result<(Value, JsonCost), DecodeError> {
    let mut counter = Counter {
        limits,
        depth: 0,
        cost: JsonCost::default(),
        exceeded: None,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Seed(&mut counter)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok((v, counter.cost)),
        Err(e) => Err(match counter.exceeded {
            Some((field, len, limit)) => DecodeError::LimitExceeded { field, len, limit },
            None => DecodeError::json(what, &e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_serde_json_does() {
        let text = br#"{"a": [1, -2, 3.5, "x", null, true, {"b": []}], "c": "d"}"#;
        let (v, cost) = parse_json_bounded("test", text, JsonLimits::default()).unwrap();
        assert_eq!(v, serde_json::from_slice::<Value>(text).unwrap());
        // The object, 3 keys, an array, 7 elements, an inner object and array.
        assert_eq!(cost.elements, 1 + 2 + 1 + 7 + 1 + 1 + 1);
        assert!(cost.estimated_bytes() > 0);
    }

    #[test]
    fn too_many_values_stop_the_parse_with_the_limit_named() {
        let body = format!("[{}1]", "1,".repeat(1000));
        let limits = JsonLimits {
            max_depth: 64,
            max_elements: 100,
        };
        let err = parse_json_bounded("test", body.as_bytes(), limits).unwrap_err();
        assert_eq!(err.class(), "limit_exceeded");
        assert!(err.to_string().contains("JSON values"), "{err}");
    }

    #[test]
    fn deep_nesting_stops_the_parse() {
        let body = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let err = parse_json_bounded("test", body.as_bytes(), JsonLimits::default()).unwrap_err();
        assert_eq!(err.class(), "limit_exceeded");
        assert!(err.to_string().contains("depth"), "{err}");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse_json_bounded("test", ok.as_bytes(), JsonLimits::default()).is_ok());
    }

    #[test]
    fn junk_and_trailing_data_are_invalid_json() {
        for bad in [&b"{"[..], b"[1] [2]", b"nul", b""] {
            let err = parse_json_bounded("test", bad, JsonLimits::default()).unwrap_err();
            assert_eq!(err.class(), "invalid_json", "{bad:?}");
        }
    }
}
