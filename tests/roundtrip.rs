//! Property tests: arbitrary bytes and generated CSV go through the gate and
//! come back byte for byte, whole and by ranges.

mod common;

use at1::format::{Backend, CodecChoice};
use at1::gate::GateConfig;
use at1::reader::{AccessCost, Reader};
use common::*;
use proptest::prelude::*;

fn check_round_trip(data: &[u8], cfg: &GateConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (_, object) = compress_bytes(data, dir.path(), "x.at1", cfg);
    assert_eq!(object.original_len(), data.len() as u64);
    assert_eq!(read_all(&object), data);
    // A few ranges, including empty and past-the-end ones.
    let reader = Reader::new(object.clone(), None);
    let len = data.len() as u64;
    for (a, n) in [(0, 1), (len / 3, 17), (len / 2, 4096), (len.saturating_sub(5), 10), (len, 3)] {
        let got = reader.read_at(a, n, &mut AccessCost::default()).unwrap();
        let end = (a as usize + n).min(data.len());
        assert_eq!(got, &data[(a as usize).min(data.len())..end]);
    }
    at1::reader::verify(object).unwrap();
}

/// One CSV field: plain, numeric, quoted with delimiters/quotes/newlines,
/// unicode, NULL tokens, or a long one.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        (-100_000i64..100_000).prop_map(|v| v.to_string()),
        (-1000i64..1000, 0u32..4).prop_map(|(m, s)| format!("{}.{:0width$}", m, 7, width = s as usize + 1)),
        Just("NA".to_string()),
        Just(String::new()),
        "\"[a-z ,\"\r\n]{0,10}\"".prop_map(|s| s),
        "[a-zé中😀 ]{1,6}",
        Just("007".to_string()),
        Just("2013-01-01T10:00:00Z".to_string()),
        "[x]{200,3000}",
    ]
}

fn csv() -> impl Strategy<Value = Vec<u8>> {
    (1usize..6, prop::collection::vec(prop::collection::vec(field(), 0..7), 0..40), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(width, rows, crlf, final_newline, bom)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut out = String::new();
            if bom {
                out.push('\u{feff}');
            }
            out.push_str(&(0..width).map(|i| format!("col{i}")).collect::<Vec<_>>().join(","));
            out.push_str(eol);
            for (i, r) in rows.iter().enumerate() {
                // Mostly regular rows, some ragged ones.
                let fields: Vec<String> = if i % 7 == 3 { r.clone() } else { (0..width).map(|c| r.get(c).cloned().unwrap_or_default()).collect() };
                out.push_str(&fields.join(","));
                if i + 1 < rows.len() || final_newline {
                    out.push_str(eol);
                }
            }
            out.into_bytes()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_round_trip(data in prop::collection::vec(any::<u8>(), 0..6000), raw in any::<bool>()) {
        let cfg = GateConfig { codec: if raw { CodecChoice::Raw } else { CodecChoice::Auto }, ..small_blocks() };
        check_round_trip(&data, &cfg);
    }

    #[test]
    fn generated_csv_round_trips(data in csv(), keep in any::<bool>(), xz in any::<bool>()) {
        let base = if xz { small_blocks().with_backend(Backend::Xz) } else { small_blocks() };
        let cfg = GateConfig { keep_queryable: keep, frame_size: 1000, row_group_bytes: 700, row_group_rows: 9, threads: 2, ..base };
        check_round_trip(&data, &cfg);
    }

    #[test]
    fn csv_with_non_utf8_bytes_round_trips(mut data in csv(), noise in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        for (at, b) in noise {
            if !data.is_empty() {
                let i = at % data.len();
                data[i] = b;
            }
        }
        check_round_trip(&data, &GateConfig { codec: CodecChoice::Auto, keep_queryable: true, ..small_blocks() });
    }
}

#[test]
fn edge_inputs_round_trip() {
    for data in [&b""[..], b"x", b"\n", b"a,b", b"a,b\n", b"\"", b"a,\"unclosed\n1,2\n", b"\xEF\xBB\xBF", b"\xEF\xBB\xBFa,b\r\n1,2"] {
        for codec in [CodecChoice::Auto, CodecChoice::Raw] {
            check_round_trip(data, &GateConfig { codec, ..small_blocks() });
        }
    }
}

#[test]
fn huge_lines_and_a_never_closing_quote_round_trip() {
    let mut data = b"a,b\n1,2\n".to_vec();
    data.extend(std::iter::repeat_n(b'z', 3 << 20)); // one 3 MiB line
    data.extend_from_slice(b"\n3,\"never closed\n");
    data.extend(std::iter::repeat_n(b'q', 100_000));
    check_round_trip(&data, &GateConfig { threads: 2, ..GateConfig::default() });
}

#[test]
fn incompressible_data_costs_at_most_a_tenth_of_a_percent() {
    let data = noise(2 << 20, 0x9E37_79B9_7F4A_7C15);
    let dir = tempfile::tempdir().unwrap();
    let (path, object) = compress_bytes(&data, dir.path(), "r.at1", &GateConfig::default());
    assert_eq!(read_all(&object), data);
    let stored = std::fs::metadata(path).unwrap().len();
    assert!(stored * 1000 <= data.len() as u64 * 1001, "{stored} bytes stored for {} incompressible bytes", data.len());
}

#[test]
fn every_corpus_file_round_trips_with_default_settings() {
    let dir = tempfile::tempdir().unwrap();
    for f in corpus_files() {
        let data = std::fs::read(&f).unwrap();
        let (_, object) = compress_bytes(&data, dir.path(), "c.at1", &GateConfig::default());
        assert_eq!(read_all(&object), data, "{}", f.display());
    }
}

#[test]
fn csv_is_stored_as_typed_columns_with_exceptions_and_layout_rows() {
    let mut text = String::from("id,name,score,when\r\n");
    for i in 0..500 {
        text.push_str(&format!("{i},\"n,{i}\",{}.{},2013-01-01T{:02}:00:00Z\r\n", i % 17, i % 10, i % 24));
    }
    text.push_str("007,odd,NA,2013-01-01 10:00:00\r\n"); // exceptions and a NULL
    text.push_str("1,ragged\r\n"); // a row layout entry
    text.push_str("2,lf only,1.5,2013-01-01T10:00:00Z\n");
    text.push_str("3,no newline,2.5,2013-01-01T10:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let cfg = GateConfig { keep_queryable: true, ..GateConfig::default() };
    let (_, object) = compress_bytes(text.as_bytes(), dir.path(), "t.at1", &cfg);
    assert_eq!(read_all(&object), text.as_bytes());
    let table = object.table().expect("a table");
    let types: Vec<_> = table.columns.iter().map(|c| c.logical_type).collect();
    use at1::value::ValueType;
    assert_eq!(types, [ValueType::Int, ValueType::String, ValueType::Decimal, ValueType::Timestamp]);
    let rows: u64 = table.row_groups.iter().map(|r| r.row_count).sum();
    assert_eq!(rows, 504);
    assert!(object.footer().blocks.iter().any(|b| b.role == at1::format::BlockRole::RowLayout));
}
