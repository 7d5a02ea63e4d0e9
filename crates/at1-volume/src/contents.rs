//! Open objects, by id: each file's content is read through one parsed
//! object (header, footer, trailer checked once), shared by every handle
//! and query that reads it. Bounded: the least recently used are closed.

use std::sync::{Arc, Mutex};

use at1_core::reader::{Object, ReadError};
use at1_store::{ObjectId, ObjectStore};
use lru::LruCache;

/// Objects kept open at most.
const OPEN_OBJECTS: usize = 256;

pub struct Contents {
    objects: Arc<dyn ObjectStore>,
    open: Mutex<LruCache<ObjectId, Arc<Object>>>,
}

impl Contents {
    pub fn new(objects: Arc<dyn ObjectStore>) -> Contents {
        let cap = std::num::NonZeroUsize::new(OPEN_OBJECTS).unwrap_or(std::num::NonZeroUsize::MIN);
        Contents { objects, open: Mutex::new(LruCache::new(cap)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<ObjectId, Arc<Object>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsed object `id`.
    pub fn get(&self, id: &ObjectId) -> Result<Arc<Object>, ReadError> {
        if let Some(o) = self.lock().get(id) {
            return Ok(o.clone());
        }
        let object = Arc::new(Object::open_source(self.objects.open(id)?)?);
        self.lock().put(*id, object.clone());
        Ok(object)
    }

    /// Forgets object `id` (it was deleted).
    pub fn forget(&self, id: &ObjectId) {
        self.lock().pop(id);
    }
}
