//! The daemon's containers: by id, with a name → id index kept beside them under the
//! same lock, so that a create's name check, a rename and a lookup by name cost one
//! hash lookup instead of a copy of every container's record. The index changes only
//! with the table ([`Table::insert`], [`Table::remove`], [`Table::rename`]), and is
//! rebuilt with it at start-up as the records are loaded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::container::Container;

/// The containers by id, and their names.
#[derive(Default)]
pub(crate) struct Table {
    by_id: BTreeMap<String, Arc<Container>>,
    by_name: HashMap<String, String>,
}

impl std::ops::Deref for Table {
    type Target = BTreeMap<String, Arc<Container>>;

    /// The containers by id (changed only through the table's own methods).
    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl Table {
    /// Adds the container `c` with its `id` and `name`. A name another container
    /// already has (two records on disk with one name, which skiffd never writes) stays
    /// that one's: this container is found by its id only, and the conflict is logged.
    pub(crate) fn insert(&mut self, id: &str, name: &str, c: Arc<Container>) {
        match self.by_name.get(name) {
            Some(other) if other != id => {
                tracing::warn!(
                    "containers {other} and {id} are both named {name:?}: the name finds the \
                     first; rename the other (skiff rename {id} NEW-NAME)"
                );
            }
            _ => {
                self.by_name.insert(name.to_string(), id.to_string());
            }
        }
        self.by_id.insert(id.to_string(), c);
    }

    /// Takes the container `id` out, and its name (`name`, its current one).
    pub(crate) fn remove(&mut self, id: &str, name: &str) -> Option<Arc<Container>> {
        if self.by_name.get(name).is_some_and(|n| n == id) {
            self.by_name.remove(name);
        }
        self.by_id.remove(id)
    }

    /// The container named `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Container>> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    /// The id of the container named `name`.
    pub(crate) fn holder_of(&self, name: &str) -> Option<String> {
        self.by_name.get(name).cloned()
    }

    /// Whether a container is named `name`.
    pub(crate) fn name_taken(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Moves the name of container `id` from `old` to `new` (the caller checked that
    /// `new` is free, under the same lock).
    pub(crate) fn rename(&mut self, id: &str, old: &str, new: &str) {
        if self.by_name.get(old).is_some_and(|n| n == id) {
            self.by_name.remove(old);
        }
        self.by_name.insert(new.to_string(), id.to_string());
    }
}
