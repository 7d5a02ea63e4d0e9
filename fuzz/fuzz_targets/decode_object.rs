//! Feeds arbitrary bytes to the object reader: opening, verifying, reading
//! ranges and columns must return errors, never panic, hang or return bytes
//! that are not the original's.
#![no_main]

use std::sync::Arc;

use at1::reader::{self, AccessCost, Object, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = Object::from_vec(data.to_vec()) else { return };
    let object = Arc::new(object);
    let _ = reader::verify(object.clone());
    let r = Reader::new(object.clone(), None);
    let len = object.original_len();
    let _ = r.read_at(0, 4096, &mut AccessCost::default());
    let _ = r.read_at(len / 2, 100, &mut AccessCost::default());
    if let Some(t) = object.table() {
        for rg in 0..t.row_groups.len().min(4) {
            for c in 0..t.columns.len().min(8) {
                let _ = r.column(rg, c, &mut AccessCost::default());
            }
        }
    }
});
