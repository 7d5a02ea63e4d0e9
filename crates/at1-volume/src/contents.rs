//! Open objects, by id: each file's content is read through one parsed
//! object (header, footer, trailer read and checked once), shared by every
//! handle and query that reads it. Bounded by the memory their footers
//! take (a footer holds every block's descriptor and every row group's
//! zone maps, so it grows with the file): the least recently used are
//! closed first, and the most recent is always kept.

use std::sync::{Arc, Mutex};

use at1_core::reader::{Object, ReadError};
use at1_store::{ObjectId, ObjectStore};
use lru::LruCache;

/// Memory the open objects' footers may take together.
const FOOTER_BUDGET: u64 = 64 << 20;

struct Open {
    objects: LruCache<ObjectId, (Arc<Object>, u64)>,
    bytes: u64,
}

pub struct Contents {
    objects: Arc<dyn ObjectStore>,
    open: Mutex<Open>,
}

/// What a parsed object costs in memory, about: its decoded footer (the
/// footer's raw length, times two for the structures built from it).
fn weight(o: &Object) -> u64 {
    o.trailer().footer_raw_len.saturating_mul(2).saturating_add(4096)
}

impl Contents {
    pub fn new(objects: Arc<dyn ObjectStore>) -> Contents {
        Contents { objects, open: Mutex::new(Open { objects: LruCache::unbounded(), bytes: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsed object `id`.
    pub fn get(&self, id: &ObjectId) -> Result<Arc<Object>, ReadError> {
        if let Some((o, _)) = self.lock().objects.get(id) {
            return Ok(o.clone());
        }
        let object = Arc::new(Object::open_source(self.objects.open(id)?)?);
        let w = weight(&object);
        let mut open = self.lock();
        if let Some((_, old)) = open.objects.put(*id, (object.clone(), w)) {
            open.bytes = open.bytes.saturating_sub(old);
        }
        open.bytes += w;
        while open.bytes > FOOTER_BUDGET && open.objects.len() > 1 {
            match open.objects.pop_lru() {
                Some((_, (_, gone))) => open.bytes = open.bytes.saturating_sub(gone),
                None => break,
            }
        }
        Ok(object)
    }

    /// Forgets object `id` (it was deleted).
    pub fn forget(&self, id: &ObjectId) {
        let mut open = self.lock();
        if let Some((_, w)) = open.objects.pop(id) {
            open.bytes = open.bytes.saturating_sub(w);
        }
    }
}
