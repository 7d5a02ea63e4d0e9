//! The format is a promise to users: objects written today must decode,
//! byte for byte, with every later version. `tests/fixtures/` holds small
//! objects written by this code (and two integer kinds it no longer writes,
//! built by hand from docs/FORMAT.md §5.3), the SHA-256 of each original in
//! `SHA256SUMS`, and the original itself where it is small. The test here
//! decodes each one on every run; `write_fixtures` (ignored by default) made
//! them and only ever adds missing ones: a fixture, once committed, is
//! never regenerated.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use at1::codec::ints::decode_ints;
use at1::format::wire::WireReader;
use at1::format::{Backend, BlockRole, CodecChoice, RowGroupStorage};
use at1::gate::{self, GateConfig};
use at1::reader::{self, AccessCost, Object, Reader};
use at1::value::ValueType;
use common::forge::Forged;
use common::*;
use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Originals at most this long are committed beside their object.
const ORIGINAL_KEPT_UP_TO: usize = 16 << 10;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `SHA256SUMS`: object file name → SHA-256 of its original.
fn expected_sums() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixtures_dir().join("SHA256SUMS")).expect("tests/fixtures/SHA256SUMS");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sum, name) = l.split_once("  ").expect("`<sha256>  <name>` lines");
            (name.to_string(), sum.to_string())
        })
        .collect()
}

#[test]
fn every_fixture_decodes_byte_for_byte() {
    let sums = expected_sums();
    assert!(sums.len() >= 10, "fixtures listed: {sums:?}");
    for (name, sum) in &sums {
        let path = fixtures_dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let object = Arc::new(Object::from_vec(bytes).unwrap_or_else(|e| panic!("{name} does not open: {e}")));
        reader::verify(object.clone()).unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
        let decoded = read_all(&object);
        assert_eq!(&sha256_hex(&decoded), sum, "{name}: SHA-256 of the decoded bytes");
        let original = path.with_extension("orig");
        if original.exists() {
            assert_eq!(decoded, std::fs::read(&original).unwrap(), "{name}: decoded bytes differ from {}", original.display());
        }
        // Tables also read by column, as SQL does, with the footer's counts.
        if let Some(t) = object.table() {
            let r = Reader::new(object.clone(), None);
            for (rg, meta) in t.row_groups.iter().enumerate() {
                for c in 0..t.columns.len() {
                    let chunk = r.column(rg, c, &mut AccessCost::default()).unwrap_or_else(|e| panic!("{name}: column {c} of row group {rg}: {e}"));
                    assert_eq!(chunk.rows() as u64, meta.row_count);
                }
            }
        }
    }
}

/// What the fixtures together exercise, read from their bytes (so a claim
/// in the README cannot drift from what is committed).
#[derive(Default, Debug)]
struct Coverage {
    integer_kinds: BTreeSet<u8>,
    backends: BTreeSet<&'static str>,
    roles: BTreeSet<&'static str>,
    column_types: BTreeSet<&'static str>,
    string_modes: BTreeSet<u8>,
    raw_row_groups: usize,
    columnar_row_groups: usize,
}

#[test]
fn fixtures_cover_every_codec_integer_kind_backend_and_dictionary() {
    let mut cov = Coverage::default();
    for name in expected_sums().keys() {
        let f = Forged::take_apart(&std::fs::read(fixtures_dir().join(name)).unwrap()).unwrap();
        for (id, b) in f.footer.blocks.iter().enumerate() {
            cov.backends.insert(b.backend.name());
            cov.roles.insert(b.role.name());
            let payload = f.payload(id as u32).unwrap();
            match b.role {
                BlockRole::Column => column_kinds(&payload, &mut cov),
                BlockRole::ColumnDictionary => {
                    let mut r = WireReader::new(&payload);
                    let n = r.varint().unwrap() as usize;
                    stream(&mut r, n, &mut cov.integer_kinds);
                }
                _ => {}
            }
        }
        for rg in f.footer.table.iter().flat_map(|t| &t.row_groups) {
            match rg.storage {
                RowGroupStorage::Raw { .. } => cov.raw_row_groups += 1,
                RowGroupStorage::Columnar { .. } => cov.columnar_row_groups += 1,
            }
        }
    }
    assert_eq!(cov.integer_kinds, (0..=8).collect(), "integer stream kinds (docs/FORMAT.md §5.3): {cov:?}");
    assert_eq!(cov.backends, ["stored", "xz", "zstd"].into(), "{cov:?}");
    for role in ["frame", "column", "row layout", "dictionary", "column dictionary"] {
        assert!(cov.roles.contains(role), "no {role} block: {cov:?}");
    }
    for ty in ["null", "integer", "decimal", "timestamp", "date", "boolean", "string"] {
        assert!(cov.column_types.contains(ty), "no {ty} chunk: {cov:?}");
    }
    assert_eq!(cov.string_modes, (0..=2).collect(), "plain strings, a chunk's own dictionary, the file's (§5.4.1): {cov:?}");
    assert!(cov.raw_row_groups > 0 && cov.columnar_row_groups > 0, "{cov:?}");
}

/// Walks a column chunk payload as docs/FORMAT.md §5.2 lays it out,
/// recording its type and the kind of each integer stream.
fn column_kinds(payload: &[u8], cov: &mut Coverage) {
    let mut r = WireReader::new(payload);
    let ty = ValueType::from_id(r.u8().unwrap()).unwrap();
    cov.column_types.insert(ty.name());
    let rows = r.varint().unwrap() as usize;
    let mut codes = vec![0u8; rows];
    if r.u8().unwrap() == 1 {
        let runs = r.varint().unwrap();
        let mut at = 0;
        for _ in 0..runs {
            let len = r.varint().unwrap() as usize;
            let code = r.u8().unwrap();
            codes[at..at + len].fill(code);
            at += len;
        }
    }
    for _ in 0..r.varint().unwrap() {
        r.varint().unwrap();
        r.bytes().unwrap();
    }
    let n = codes.iter().filter(|&&c| c == 0).count();
    let kinds = &mut cov.integer_kinds;
    match ty {
        ValueType::Null => {}
        ValueType::Int | ValueType::Date => drop(stream(&mut r, n, kinds)),
        ValueType::Decimal => {
            stream(&mut r, n, kinds);
            stream(&mut r, n, kinds);
        }
        ValueType::Timestamp => {
            r.take(4).unwrap();
            stream(&mut r, n, kinds);
        }
        ValueType::Bool => {
            r.u8().unwrap();
            stream(&mut r, n, kinds);
        }
        ValueType::String => {
            let mode = r.u8().unwrap();
            cov.string_modes.insert(mode);
            if mode == 2 {
                r.varint().unwrap();
            }
            let entries = if mode == 0 { n } else { r.varint().unwrap() as usize };
            let total: i64 = stream(&mut r, entries, kinds).iter().sum();
            r.take(total as usize).unwrap();
            if mode != 0 {
                stream(&mut r, n, kinds);
            }
        }
    }
    assert!(r.is_at_end(), "the walk of a {} chunk ends at its end", ty.name());
}

/// One integer stream of `n` values (§5.3), noting its kind and, for a
/// dictionary, the kinds of its two inner streams.
fn stream(r: &mut WireReader<'_>, n: usize, kinds: &mut BTreeSet<u8>) -> Vec<i64> {
    let kind = r.peek_u8().unwrap();
    kinds.insert(kind);
    if kind != 8 {
        return decode_ints(r, n).unwrap();
    }
    r.u8().unwrap();
    let d = r.varint().unwrap() as usize;
    let values = stream(r, d, kinds);
    stream(r, n, kinds).iter().map(|&i| values[i as usize]).collect()
}

/// docs/FORMAT.md §10, byte for byte.
#[test]
fn the_format_example_is_the_documented_object() {
    let bytes = std::fs::read(fixtures_dir().join("format-example.at1")).unwrap();
    assert_eq!(bytes.len(), 214);
    assert_eq!(&bytes[..12], b"\x89AT1\r\n\x1a\n\x01\x00\x00\x00");
    assert_eq!(&bytes[16..22], [0x01, 0x01, 0x00, 0x00, 0x00, 0x02]);
    assert_eq!(&bytes[22..30], [0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x78]);
    let object = Object::from_vec(bytes).unwrap();
    let t = object.trailer();
    assert_eq!((t.footer_offset, t.original_len), (30, 8));
    assert_eq!(t.original_sha256[..], Sha256::digest(b"a,b\n1,x\n")[..]);
    assert_eq!(object.footer().segments.len(), 2, "a literal header and one row group");
    let raw = Object::from_vec(std::fs::read(fixtures_dir().join("format-example-raw.at1")).unwrap()).unwrap();
    let frame = &raw.footer().blocks[0];
    assert_eq!((frame.role, frame.backend), (BlockRole::Frame, Backend::Stored));
    assert_eq!(raw.read_block(0).unwrap().verify().unwrap().bytes(), b"1,x\n", "the row kept raw: 31 2C 78 0A");
}

// ---------------------------------------------------------------- writing

/// A log whose lines repeat long fragments (user agents): frames compress,
/// and with enough of it a zstd dictionary pays off.
fn log_text(lines: usize) -> Vec<u8> {
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
    (0..lines).flat_map(|i| format!("2024-01-01 host{} GET /path/{} 200 {} \"{}\"\n", i % 7, i % 311, i * 13, agents[(i * 7) % 24]).into_bytes()).collect()
}

/// A table with a column per integer stream shape the encoder chooses
/// among (constant, sequence, few small values, sorted with small steps,
/// clock times, few wide values, wide noise of whole bytes, sorted with
/// steps of a whole byte), every column type, NULL tokens,
/// exceptions, quoted strings, a repeating string column (a column
/// dictionary) and a ragged row (a row layout).
fn table_text() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut csv = String::from("year,id,origin,stamp,clock,distance,price,day,when,ok,carrier,note,empty,wide,steps\n");
    let (mut stamp, mut steps) = (1_000_000i64, 0u64);
    for i in 0..1200u64 {
        let r = random();
        stamp += (r % 7) as i64;
        // Byte planes win where the width is whole bytes (bit packing is
        // then not tried): 16-bit noise (FOR), and steps of 0..=255 (delta).
        let wide = random() % 65_536;
        steps += random() % 256;
        let clock = (5 + r % 19) * 100 + (r >> 32) % 60;
        let distance = [187, 719, 1028, 2475, 4983][(r >> 8) as usize % 5];
        let price = if i % 97 == 5 { "007".to_string() } else { format!("{}.{:02}", (r >> 16) % 900, (r >> 40) % 100) };
        let day = format!("2013-{:02}-{:02}", 1 + i % 12, 1 + (r >> 20) % 28);
        let when = format!("2013-01-01 {:02}:{:02}", (i / 60) % 24, i % 60);
        let ok = ["TRUE", "FALSE", "NA"][(r >> 24) as usize % 3];
        let carrier = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN", "VX", "FL"][(r >> 28) as usize % 10];
        let note = match i % 50 {
            0 => "\"quoted, with a comma\"".to_string(),
            1 => "\"say \"\"hi\"\"\"".to_string(),
            2 => String::new(),
            _ => format!("n{}", (r >> 36) % 40),
        };
        csv.push_str(&format!("2013,{},{},{stamp},{clock},{distance},{price},{day},{when},{ok},{carrier},{note},NA,{wide},{steps}\n", i + 1, r % 3));
        if i == 600 {
            csv.push_str("ragged,row\n");
        }
    }
    csv.into_bytes()
}

/// Rows whose text repeats within itself: smaller kept raw than as columns.
fn raw_table_text() -> Vec<u8> {
    let mut csv = String::from("k,a,b\n");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..60u64 {
        let s: String = (0..40)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
            .collect();
        csv.push_str(&format!("{i},{s},{s}\n"));
    }
    csv.into_bytes()
}

/// Kinds 4 and 5 (FOR and delta over little-endian words) are read but no
/// longer written: the columns of `n,m\n5,1000\n300,1003\n7,1010\n`,
/// written by hand from docs/FORMAT.md §5.2 and §5.3.
fn kinds_4_and_5() -> Vec<u8> {
    let text = b"n,m\n5,1000\n300,1003\n7,1010\n";
    let cfg = GateConfig { keep_queryable: true, threads: 1, ..GateConfig::default().with_backend(Backend::Stored) };
    let mut out = Vec::new();
    gate::compress_to_writer(&text[..], &mut out, &cfg, &|_| {}).unwrap();
    let mut f = Forged::take_apart(&out).unwrap();
    let RowGroupStorage::Columnar { columns, .. } = f.footer.table.as_ref().unwrap().row_groups[0].storage.clone() else { panic!("columnar") };
    // type 1 (integer), 3 rows, codes mode 0, no exceptions, then:
    // n: kind 4, base zigzag(5) = 0x0a, 2-byte words 0, 295, 2.
    f.set_payload(columns[0], vec![0x01, 0x03, 0x00, 0x00, 0x04, 0x0a, 0x02, 0x00, 0x00, 0x27, 0x01, 0x02, 0x00]);
    // m: kind 5, first zigzag(1000) = 2000 = d0 0f, base zigzag(3) = 6,
    // 1-byte words 0, 4 (deltas 3 and 7).
    f.set_payload(columns[1], vec![0x01, 0x03, 0x00, 0x00, 0x05, 0xd0, 0x0f, 0x06, 0x01, 0x00, 0x04]);
    f.to_bytes()
}

fn gate_object(text: &[u8], cfg: GateConfig) -> Vec<u8> {
    let mut out = Vec::new();
    gate::compress_to_writer(text, &mut out, &GateConfig { threads: 1, ..cfg }, &|_| {}).unwrap();
    out
}

/// `at1 compress [args] - -` of `text`, as FORMAT.md §10 shows it.
fn cli_object(text: &[u8], args: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut child = spawn(Command::new(at1_bin()).arg("compress").args(args).args(["-", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped())).unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// How a fixture's object is made from its original.
type Writer<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;

/// Writes the fixtures that are not there yet (existing ones are never
/// rewritten): `cargo test --release --test golden -- --ignored write_fixtures`.
#[test]
#[ignore]
fn write_fixtures() {
    let small = |cfg: GateConfig| GateConfig { frame_size: 4096, row_group_bytes: 8 << 10, ..cfg };
    let raw = |cfg: GateConfig| GateConfig { codec: CodecChoice::Raw, ..small(cfg) };
    let fixtures: Vec<(&str, Vec<u8>, Writer<'_>)> = vec![
        ("raw-zstd", log_text(100), Box::new(move |t| gate_object(t, raw(GateConfig::default())))),
        ("raw-zstd-dictionary", log_text(1200), Box::new(move |t| gate_object(t, raw(GateConfig::default())))),
        ("raw-xz", log_text(100), Box::new(move |t| gate_object(t, raw(GateConfig::default().with_backend(Backend::Xz))))),
        ("raw-stored", noise(3000, 7), Box::new(move |t| gate_object(t, raw(GateConfig::default())))),
        ("empty", Vec::new(), Box::new(move |t| gate_object(t, GateConfig::default()))),
        ("table-zstd", table_text(), Box::new(move |t| gate_object(t, GateConfig { keep_queryable: true, ..small(GateConfig::default()) }))),
        (
            "table-xz",
            table_text(),
            Box::new(move |t| gate_object(t, GateConfig { keep_queryable: true, ..small(GateConfig::default().with_backend(Backend::Xz)) })),
        ),
        (
            "table-stored",
            table_text(),
            Box::new(move |t| gate_object(t, GateConfig { keep_queryable: true, ..small(GateConfig::default().with_backend(Backend::Stored)) })),
        ),
        ("table-raw-row-groups", raw_table_text(), Box::new(move |t| gate_object(t, GateConfig { row_group_rows: 20, ..GateConfig::default() }))),
        ("table-kinds-4-5", b"n,m\n5,1000\n300,1003\n7,1010\n".to_vec(), Box::new(|_| kinds_4_and_5())),
        ("format-example", b"a,b\n1,x\n".to_vec(), Box::new(|t| cli_object(t, &["--keep-queryable"]))),
        ("format-example-raw", b"a,b\n1,x\n".to_vec(), Box::new(|t| cli_object(t, &[]))),
    ];
    let dir = fixtures_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let sums_path = dir.join("SHA256SUMS");
    let mut sums = std::fs::read_to_string(&sums_path).unwrap_or_default();
    for (name, text, write) in fixtures {
        let path = dir.join(format!("{name}.at1"));
        if path.exists() {
            eprintln!("kept {}", path.display());
            continue;
        }
        std::fs::write(&path, write(&text)).unwrap();
        if text.len() <= ORIGINAL_KEPT_UP_TO {
            std::fs::write(path.with_extension("orig"), &text).unwrap();
        }
        sums.push_str(&format!("{}  {name}.at1\n", sha256_hex(&text)));
        eprintln!("wrote {}", path.display());
    }
    std::fs::write(&sums_path, sums).unwrap();
}
