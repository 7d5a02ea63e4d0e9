//! Single-bit flips in every region of real objects — header, each kind of
//! block, footer (index, zone maps), trailer — are detected before any byte
//! is returned: opening fails, or reading what depends on the flipped block
//! fails, and `verify` fails.

mod common;

use std::sync::Arc;

use at1::format::{BlockRole, CodecChoice, HEADER_LEN, TRAILER_LEN};
use at1::gate::GateConfig;
use at1::reader::{self, AccessCost, Object, Reader};
use common::*;

/// Objects covering every block role: a dictionary and frames (raw log), a
/// columnar table with a row layout and a raw-kept row group.
fn sample_objects(dir: &std::path::Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // Long repeated strings (user agents) that each small frame meets anew:
    // what a dictionary is for (the gate keeps one only if it pays off).
    let agents: Vec<String> = (0..24)
        .map(|k| {
            format!(
                "Mozilla/5.0 (X11; Linux x86_64; build {k}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{}.{} Safari/537.36",
                100 + k,
                k * 37,
                k * 11
            )
        })
        .collect();
    let log: Vec<u8> = (0..10_000)
        .flat_map(|i| format!("2024-01-01 host{} GET /path/{} 200 {} \"{}\"\n", i % 7, i % 311, i * 13, agents[(i * 7) % 24]).into_bytes())
        .collect();
    let cfg = GateConfig { codec: CodecChoice::Raw, frame_size: 8 << 10, threads: 2, ..GateConfig::default() };
    let (p, object) = compress_bytes(&log, dir, "log.at1", &cfg);
    assert!(object.footer().blocks.iter().any(|b| b.role == BlockRole::Dictionary), "the log sample has a dictionary block");
    out.push(("log".to_string(), log, std::fs::read(p).unwrap()));

    let mut csv = String::from("id,name,value\n");
    for i in 0..3000 {
        csv.push_str(&format!("{i},name{},{}.5\n", i % 13, i));
        if i == 1500 {
            csv.push_str("ragged,row\n");
        }
    }
    // Rows whose second and third fields repeat each other: only the raw
    // text sees the repetition, so these row groups are kept raw.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..400u64 {
        let s: String = (0..60)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
            .collect();
        csv.push_str(&format!("{i},{s},{s}\n"));
    }
    let cfg = GateConfig { row_group_bytes: 16 << 10, threads: 2, ..GateConfig::default() };
    let (p, object) = compress_bytes(csv.as_bytes(), dir, "table.at1", &cfg);
    let roles: Vec<BlockRole> = object.footer().blocks.iter().map(|b| b.role).collect();
    assert!(roles.contains(&BlockRole::Column) && roles.contains(&BlockRole::RowLayout) && roles.contains(&BlockRole::Frame), "{roles:?}");
    out.push(("table".to_string(), csv.into_bytes(), std::fs::read(p).unwrap()));
    out
}

/// Flips `bit` and checks that no wrong byte comes out: either the object
/// does not open, or every full read / verify fails, and reads that succeed
/// return exactly the original bytes.
fn check_flip(name: &str, original: &[u8], object_bytes: &[u8], bit: usize) {
    let mut bad = object_bytes.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    let Ok(object) = Object::from_vec(bad) else { return };
    let object = Arc::new(object);
    assert!(reader::verify(object.clone()).is_err(), "{name}: flip of bit {bit} passed verify");
    let reader = Reader::new(object.clone(), None);
    let full = reader.read_at(0, original.len(), &mut AccessCost::default());
    assert!(full.is_err(), "{name}: flip of bit {bit} not detected by a full read");
    // Partial reads either fail or are exact (corruption is local to a block).
    let step = (original.len() / 16).max(1);
    for start in (0..original.len()).step_by(step) {
        if let Ok(bytes) = reader.read_at(start as u64, 4096, &mut AccessCost::default()) {
            assert_eq!(bytes, &original[start..(start + 4096).min(original.len())], "{name}: wrong bytes after flip of bit {bit}");
        }
    }
}

#[test]
fn every_region_detects_single_bit_flips() {
    let dir = tempfile::tempdir().unwrap();
    for (name, original, bytes) in sample_objects(dir.path()) {
        let object = Object::from_vec(bytes.clone()).unwrap();
        let trailer_at = bytes.len() - TRAILER_LEN as usize;
        let footer_at = object.trailer().footer_offset as usize;
        // Header and trailer: every bit.
        for bit in 0..(HEADER_LEN as usize * 8) {
            check_flip(&name, &original, &bytes, bit);
        }
        for bit in trailer_at * 8..bytes.len() * 8 {
            check_flip(&name, &original, &bytes, bit);
        }
        // Footer (block index, segment index, zone maps): every 7th bit.
        for bit in (footer_at * 8..trailer_at * 8).step_by(7) {
            check_flip(&name, &original, &bytes, bit);
        }
        // Each block: its first, middle and last bit, and a few more.
        for b in &object.footer().blocks {
            let (start, end) = (b.offset as usize * 8, (b.offset + b.stored_len) as usize * 8);
            for bit in [start, (start + end) / 2, end - 1, start + 9, end - 13] {
                if (start..end).contains(&bit) {
                    check_flip(&name, &original, &bytes, bit);
                }
            }
        }
    }
}

#[test]
fn truncated_objects_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for (_, _, bytes) in sample_objects(dir.path()) {
        for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1, bytes.len() - 80, 15, 16, 17]) {
            let cut = bytes[..len].to_vec();
            match Object::from_vec(cut) {
                Err(_) => {}
                Ok(o) => panic!("a truncation to {len} bytes opened: {o:?}"),
            }
        }
    }
}

#[test]
fn non_at1_files_are_rejected_with_a_clear_error() {
    let err = Object::from_vec(b"just some text that is long enough to have a trailer, really it is, yes.................".to_vec()).unwrap_err();
    assert!(err.to_string().contains("not an .at1 object"), "{err}");
}
