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

/// `Container.Stats`' dictionary: a number that is unavailable is left out.
pub fn stats_dict(
    rec: &crate::daemon::Record,
    sample: Option<&crate::procstat::Sample>,
) -> Result<HashMap<String, OwnedVariant>, super::SkiffError> {
    let mut d: HashMap<String, OwnedVariant> = HashMap::new();
    let mut put = |k: &str, v: Variant<'static>| -> Result<(), super::SkiffError> {
        let v = OwnedVariant::try_from(v).map_err(|e| super::SkiffError::Failed(e.to_string()))?;
        d.insert(k.to_string(), v);
        Ok(())
    };
    put("id", Variant::from(rec.id.clone()))?;
    put("name", Variant::from(rec.name.clone()))?;
    put("running", Variant::from(sample.is_some()))?;
    if let Some(s) = sample {
        put("read", Variant::from(s.read_ns))?;
        put("sources", Variant::from(s.sources.clone()))?;
        let numbers = [
            ("cpu", s.cpu_ns),
            ("memory", s.memory),
            ("memory_limit", s.memory_limit),
            ("net_rx", s.net.map(|n| n.0)),
            ("net_tx", s.net.map(|n| n.1)),
            ("block_read", s.block.map(|b| b.0)),
            ("block_write", s.block.map(|b| b.1)),
            ("pids", s.pids),
        ];
        for (k, v) in numbers {
            if let Some(v) = v {
                put(k, Variant::from(v))?;
            }
        }
    }
    Ok(d)
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
