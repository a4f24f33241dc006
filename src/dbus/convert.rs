//! Decoding D-Bus values: the `a{sv}` container config becomes the JSON object the
//! backend's one serde struct reads, so the dictionary and its JSON twin cannot drift.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

/// Converts one variant to JSON; fds and structs are refused (no config key uses them).
pub fn variant_to_json(key: &str, v: &Variant<'_>) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Variant::Bool(b) => J::Bool(*b),
        Variant::U8(n) => J::from(*n),
        Variant::I16(n) => J::from(*n),
        Variant::U16(n) => J::from(*n),
        Variant::I32(n) => J::from(*n),
        Variant::U32(n) => J::from(*n),
        Variant::I64(n) => J::from(*n),
        Variant::U64(n) => J::from(*n),
        Variant::F64(n) => J::from(*n),
        Variant::Str(s) => J::String(s.as_str().to_string()),
        Variant::ObjectPath(p) => J::String(p.as_str().to_string()),
        Variant::Signature(s) => J::String(s.to_string()),
        Variant::Variant(inner) => variant_to_json(key, inner)?,
        Variant::Array(a) => J::Array(
            a.inner()
                .iter()
                .map(|x| variant_to_json(key, x))
                .collect::<Result<_, _>>()?,
        ),
        Variant::Dict(d) => {
            let mut obj = serde_json::Map::new();
            for (k, val) in d.iter() {
                let k = match k {
                    Variant::Str(s) => s.as_str().to_string(),
                    _ => return Err(format!("key \"{key}\": dictionary keys must be strings")),
                };
                obj.insert(k, variant_to_json(key, val)?);
            }
            J::Object(obj)
        }
        _ => {
            return Err(format!(
                "key \"{key}\": unsupported value type {}",
                v.value_signature()
            ))
        }
    })
}

/// Converts an `a{sv}` dictionary to a JSON object.
pub fn dict_to_json(dict: &HashMap<String, OwnedVariant>) -> Result<serde_json::Value, String> {
    let mut obj = serde_json::Map::new();
    for (k, v) in dict {
        obj.insert(k.clone(), variant_to_json(k, v)?);
    }
    Ok(serde_json::Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_becomes_json() {
        let mut d: HashMap<String, OwnedVariant> = HashMap::new();
        d.insert(
            "image".into(),
            OwnedVariant::try_from(Variant::from("busybox")).unwrap(),
        );
        d.insert(
            "command".into(),
            OwnedVariant::try_from(Variant::from(vec!["sh".to_string(), "-c".to_string()]))
                .unwrap(),
        );
        d.insert(
            "auto-remove".into(),
            OwnedVariant::try_from(Variant::from(true)).unwrap(),
        );
        let j = dict_to_json(&d).unwrap();
        assert_eq!(j["image"], "busybox");
        assert_eq!(j["command"][1], "-c");
        assert_eq!(j["auto-remove"], true);
    }
}
