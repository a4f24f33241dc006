//! The disk the overlay driver's `--userns keep-id` layer copies use
//! (`layers/<hex>/keepid/<key>`, made by `runtime::keepid_layers`): a copy holds the
//! same regular-file bytes as its layer, so each counts the layer's size.

use std::fs;

use super::ImageStore;

/// The keep-id layer copies in the store, for `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeepIdCopies {
    /// Layer copies (one per layer and keep-id mapping).
    pub count: u64,
    /// Their regular files' bytes.
    pub bytes: u64,
}

/// Whether an entry of a layer's `keepid/` directory is a finished copy (not a lock
/// file, not a copy being made or left by a crash).
pub(crate) fn is_copy(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(".lock")
}

impl ImageStore {
    /// The keep-id layer copies and the bytes they use.
    pub fn keep_id_copies(&self) -> KeepIdCopies {
        let mut out = KeepIdCopies::default();
        let Ok(layers) = fs::read_dir(self.root().join("layers")) else {
            return out;
        };
        for layer in layers.flatten() {
            let Ok(copies) = fs::read_dir(layer.path().join("keepid")) else {
                continue;
            };
            let n = copies
                .flatten()
                .filter(|c| c.file_name().to_str().is_some_and(is_copy))
                .count() as u64;
            if n > 0 {
                let id = format!("sha256:{}", layer.file_name().to_string_lossy());
                out.count += n;
                out.bytes += n * self.layer_size(&id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_count_their_layers_size_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path()).unwrap();
        assert_eq!(store.keep_id_copies(), KeepIdCopies::default());
        let hex = "ab".repeat(32);
        let layer = t.path().join("layers").join(&hex);
        fs::create_dir_all(layer.join("keepid/k1")).unwrap();
        fs::create_dir_all(layer.join("keepid/k2")).unwrap();
        fs::create_dir_all(layer.join("keepid/.tmp-k3")).unwrap();
        fs::write(layer.join("keepid/k1.lock"), b"").unwrap();
        fs::write(layer.join("layer.json"), br#"{"size": 1000}"#).unwrap();
        assert_eq!(
            store.keep_id_copies(),
            KeepIdCopies {
                count: 2,
                bytes: 2000
            }
        );
    }
}
