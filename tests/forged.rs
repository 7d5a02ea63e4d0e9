//! Objects whose checksums all pass but whose layout lies (made by editing
//! decoded footers and payloads and recomputing every checksum, see
//! `common/forge.rs`): each broken layout rule of docs/FORMAT.md is refused
//! when the object is opened, or, for what only a payload can tell, when
//! the payload is decoded — an error, never a panic.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use at1::format::{Backend, BlockRole, RowGroupStorage, SegmentKind};
use at1::gate::GateConfig;
use at1::reader::{AccessCost, Object, ReadError, Reader};
use at1::value::ValueType;
use common::forge::Forged;
use common::*;

/// A small table whose row groups are all kept raw (a few bytes each are
/// smaller as text than as columns).
fn raw_row_groups(dir: &Path) -> Vec<u8> {
    let cfg = GateConfig { row_group_rows: 1, threads: 2, ..GateConfig::default() };
    let (path, object) = compress_bytes(b"a,b\n1,x\n2,y\n3,z\n", dir, "raw.at1", &cfg);
    let table = object.table().expect("a table");
    assert_eq!(table.row_groups.len(), 3);
    assert!(table.row_groups.iter().all(|rg| matches!(rg.storage, RowGroupStorage::Raw { .. })), "every row group raw");
    std::fs::read(path).unwrap()
}

/// A small columnar table: integers, strings with NULLs, decimals.
fn columnar(dir: &Path) -> Vec<u8> {
    let mut csv = String::from("id,name,price\n");
    for i in 0..40 {
        csv.push_str(&format!("{i},{},{}.{}\n", ["ab", "cd", "NA"][i % 3], i * 3, i % 10));
    }
    let cfg = GateConfig { keep_queryable: true, row_group_rows: 16, threads: 2, ..GateConfig::default() };
    let (path, object) = compress_bytes(csv.as_bytes(), dir, "columnar.at1", &cfg);
    assert!(object.table().unwrap().row_groups.iter().all(|rg| matches!(rg.storage, RowGroupStorage::Columnar { .. })));
    std::fs::read(path).unwrap()
}

fn forge(bytes: &[u8], edit: impl FnOnce(&mut Forged)) -> Vec<u8> {
    let mut f = Forged::take_apart(bytes).expect("the sample opens");
    edit(&mut f);
    f.to_bytes()
}

/// Opening must fail, with an error that names `what`.
fn refused_at_open(bytes: Vec<u8>, what: &str) {
    match Object::from_vec(bytes) {
        Ok(o) => panic!("a forged object opened: {o:?} (expected an error about {what:?})"),
        Err(e) => assert!(e.to_string().contains(what), "error {e:?} does not name {what:?}"),
    }
}

fn row_groups(f: &mut Forged) -> &mut Vec<at1::format::RowGroupMeta> {
    &mut f.footer.table.as_mut().unwrap().row_groups
}

#[test]
fn forged_objects_without_edits_still_open_and_read() {
    let dir = tempfile::tempdir().unwrap();
    for bytes in [raw_row_groups(dir.path()), columnar(dir.path())] {
        let again = forge(&bytes, |_| {});
        let object = Arc::new(Object::from_vec(again).expect("an unedited forgery opens"));
        at1::reader::verify(object).expect("and verifies");
    }
}

#[test]
fn raw_row_group_named_by_no_segment_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = raw_row_groups(dir.path());
    // The segment of the last row group becomes a frame segment of the same
    // block: the text still reads, but no segment names row group 2.
    let forged = forge(&bytes, |f| {
        let RowGroupStorage::Raw { block } = row_groups(f)[2].storage else { unreachable!() };
        let seg = f.footer.segments.iter_mut().find(|s| s.kind == SegmentKind::RowGroup(2)).unwrap();
        seg.kind = SegmentKind::Frame(block);
    });
    // Before the check, this opened and a column read of row group 2
    // indexed the segments with usize::MAX.
    if let Ok(o) = Object::from_vec(forged.clone()) {
        let _ = Reader::new(Arc::new(o), None).column(2, 0, &mut AccessCost::default());
    }
    refused_at_open(forged, "row group 2 is named by no segment");
}

#[test]
fn row_group_named_by_two_segments_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&raw_row_groups(dir.path()), |f| {
        let seg = f.footer.segments.iter_mut().find(|s| s.kind == SegmentKind::RowGroup(2)).unwrap();
        seg.kind = SegmentKind::RowGroup(1);
    });
    refused_at_open(forged, "row group 1");
}

#[test]
fn row_group_segments_out_of_order_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&raw_row_groups(dir.path()), |f| {
        for s in &mut f.footer.segments {
            s.kind = match s.kind {
                SegmentKind::RowGroup(1) => SegmentKind::RowGroup(2),
                SegmentKind::RowGroup(2) => SegmentKind::RowGroup(1),
                ref k => k.clone(),
            };
        }
    });
    refused_at_open(forged, "names row group 2 where row group 1 comes next");
}

#[test]
fn footer_row_count_raised_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| row_groups(f)[0].row_count += 1);
    refused_at_open(forged, "row group 0 has 17 rows but column 0's statistics count 16");
}

/// The same edit with the statistics raised to match: only the column
/// payloads can tell. Before the decoder's check, `at1 sql` indexed past
/// a chunk's rows and panicked (exit 101).
#[test]
fn footer_row_count_raised_with_its_statistics_is_an_error_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let rg = &mut row_groups(f)[0];
        rg.row_count += 1;
        for s in &mut rg.stats {
            s.nulls += 1;
        }
    });
    let path = dir.path().join("t.csv.at1");
    std::fs::write(&path, &forged).unwrap();
    let object = Arc::new(Object::from_vec(forged).expect("the footer alone is consistent"));
    let err = Reader::new(object, None).column(0, 1, &mut AccessCost::default()).unwrap_err();
    assert!(err.to_string().contains("16 rows but the footer says 17"), "{err}");

    let out = at1_sql(&path, "SELECT name, COUNT(*) FROM t.csv GROUP BY name");
    assert_eq!(out.0, 1, "exit code; stderr: {}", out.2);
    assert!(out.1.is_empty(), "no partial result: {}", out.1);
    assert_eq!(out.2.lines().count(), 1, "one line: {}", out.2);
    assert!(out.2.contains("16 rows but the footer says 17"), "{}", out.2);
}

/// Runs `at1 sql FILE QUERY` under a timeout: (exit code, stdout, stderr).
fn at1_sql(file: &Path, query: &str) -> (i32, String, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120"]).arg(at1_bin()).arg("sql").arg(file).arg(query);
    let child = spawn(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped())).expect("at1 runs");
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn statistics_that_disagree_with_the_chunk_are_an_error_when_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let s = &mut row_groups(f)[0].stats[1];
        s.values += 1;
        s.nulls -= 1;
    });
    let object = Arc::new(Object::from_vec(forged).unwrap());
    let err = Reader::new(object, None).column(0, 1, &mut AccessCost::default()).unwrap_err();
    assert!(err.to_string().contains("statistics"), "{err}");
}

#[test]
fn chunk_type_other_than_the_footer_says_is_an_error_when_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let t = f.footer.table.as_mut().unwrap();
        // Decimal is the join of integer chunks too: the file stays consistent.
        t.columns[0].logical_type = ValueType::Decimal;
        for rg in &mut t.row_groups {
            rg.stats[0].storage_type = ValueType::Decimal;
            rg.stats[0].sum = None;
        }
    });
    let object = Arc::new(Object::from_vec(forged).unwrap());
    let err = Reader::new(object, None).column(0, 0, &mut AccessCost::default()).unwrap_err();
    assert!(err.to_string().contains("stored as integer but the footer says decimal"), "{err}");
}

#[test]
fn column_type_that_is_not_the_join_of_its_chunks_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| f.footer.table.as_mut().unwrap().columns[0].logical_type = ValueType::Date);
    refused_at_open(forged, "column 0 has type date but its row groups join to integer");
}

#[test]
fn row_count_above_the_segment_length_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let rg = &mut row_groups(f)[0];
        rg.row_count = 1 << 40;
        for s in &mut rg.stats {
            s.nulls += (1 << 40) - 16;
        }
    });
    refused_at_open(forged, "more rows than its segment has bytes");
}

#[test]
fn table_without_columns_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let t = f.footer.table.as_mut().unwrap();
        t.columns.clear();
        for rg in &mut t.row_groups {
            rg.stats.clear();
            rg.storage = RowGroupStorage::Columnar { layout: None, columns: Vec::new() };
        }
    });
    refused_at_open(forged, "the table has no columns");
}

#[test]
fn row_group_over_the_row_limit_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let rows = at1::format::MAX_ROW_GROUP_ROWS + 1;
    let forged = forge(&columnar(dir.path()), |f| {
        // A segment long enough for that many rows (the footer alone says
        // so: nothing is decoded at open), and statistics in step.
        let rg0 = f.footer.segments.iter().position(|s| s.kind == SegmentKind::RowGroup(0)).unwrap();
        f.footer.segments[rg0].len += 2 * rows;
        f.original_len += 2 * rows;
        let meta = &mut row_groups(f)[0];
        for s in &mut meta.stats {
            s.nulls += rows - meta.row_count;
        }
        meta.row_count = rows;
    });
    refused_at_open(forged, "row group 0 has 1048577 rows, more than 1048576");
}

#[test]
fn stored_block_whose_lengths_differ_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| {
        let b = f.footer.blocks.iter_mut().find(|b| b.backend == Backend::Stored).expect("a stored block");
        b.decoded_len += 1;
    });
    refused_at_open(forged, "is stored but its lengths differ");
}

#[test]
fn block_decoded_length_over_the_limit_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| f.footer.blocks[0].decoded_len = 1 << 40);
    refused_at_open(forged, "decodes to more than");
}

#[test]
fn frame_block_whose_length_differs_from_its_segment_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&raw_row_groups(dir.path()), |f| {
        let RowGroupStorage::Raw { block } = row_groups(f)[0].storage else { unreachable!() };
        let mut payload = f.payload(block).unwrap();
        payload.extend_from_slice(b"4,w\n");
        f.set_payload(block, payload);
    });
    refused_at_open(forged, "decodes to 8 bytes but its segment has 4");
}

/// A raw log whose frames are compressed with a zstd dictionary (block 0).
fn with_dictionary(dir: &Path) -> Vec<u8> {
    let agents: Vec<String> = (0..24)
        .map(|k| format!("Mozilla/5.0 (X11; Linux x86_64; build {k}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0 Safari/537.36", 100 + k))
        .collect();
    let log: Vec<u8> = (0..6000).flat_map(|i| format!("2024-01-01 host{} GET /p/{} 200 \"{}\"\n", i % 7, i % 311, agents[(i * 7) % 24]).into_bytes()).collect();
    let cfg = GateConfig { codec: at1::format::CodecChoice::Raw, frame_size: 8 << 10, threads: 2, ..GateConfig::default() };
    let (path, object) = compress_bytes(&log, dir, "log.at1", &cfg);
    assert_eq!(object.footer().blocks[0].role, BlockRole::Dictionary, "the log sample has a dictionary");
    std::fs::read(path).unwrap()
}

#[test]
fn dictionary_block_with_a_dictionary_of_its_own_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&with_dictionary(dir.path()), |f| f.footer.blocks[0].dict = Some(0));
    refused_at_open(forged, "dictionary block 0 names a dictionary");
}

#[test]
fn block_naming_a_missing_dictionary_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let forged = forge(&columnar(dir.path()), |f| f.footer.blocks[0].dict = Some(u32::MAX));
    refused_at_open(forged, "missing block 4294967295");
}

#[test]
fn forged_row_count_is_caught_without_panicking_anywhere() {
    // Every row group's count raised and lowered, statistics kept in step:
    // opening, reading, verifying and querying give errors or the right
    // answer, never a panic.
    let dir = tempfile::tempdir().unwrap();
    let bytes = columnar(dir.path());
    for delta in [-15i64, -1, 1, 5] {
        for rg in 0..3 {
            let mut f = Forged::take_apart(&bytes).unwrap();
            let meta = &mut row_groups(&mut f)[rg];
            let Some(rows) = meta.row_count.checked_add_signed(delta) else { continue };
            let Some(nulls) = meta.stats.iter().map(|s| s.nulls.checked_add_signed(delta)).collect::<Option<Vec<_>>>() else { continue };
            meta.row_count = rows;
            for (s, n) in meta.stats.iter_mut().zip(nulls) {
                s.nulls = n;
            }
            let Ok(object) = Object::from_vec(f.to_bytes()) else { continue };
            let object = Arc::new(object);
            let reader = Reader::new(object.clone(), None);
            // (A whole read, not `reader::verify`: its parallel extract can
            // wait forever when a segment fails, a bug fixed apart.)
            let whole = reader.read_at(0, object.original_len() as usize, &mut AccessCost::default());
            assert!(whole.is_err(), "delta {delta} in row group {rg} read back");
            for c in 0..3 {
                let r: Result<_, ReadError> = reader.column(rg, c, &mut AccessCost::default());
                assert!(r.is_err(), "delta {delta}: column {c} of row group {rg} decoded");
            }
        }
    }
}
