//! SQL: differential tests against SQLite (every supported construct, on
//! generated tables and on corpus CSVs), the reference results of
//! ../shared/corpus/QUERIES.md, and `.at1/sql` through a real mount.

mod common;

use common::volume::TestVolume;

use at1::gate::GateConfig;
use at1::query::{self, Limits, OutputFormat};
use common::mount::Mounted;
use common::*;
use rusqlite::types::ValueRef;
use serde_json::Value;

/// Runs a query through the engine on a store directory; the JSON result.
fn ours(v: &TestVolume, sql: &str) -> Value {
    let mut out = Vec::new();
    query::execute(sql, &v.source(), None, OutputFormat::Json, &Limits::default(), &mut out).unwrap_or_else(|e| panic!("{sql}: {e}"));
    serde_json::from_slice(&out).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<Value>> {
    v["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect()
}

/// SQLite's rows as JSON values.
fn theirs(db: &rusqlite::Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("sqlite: {sql}: {e}"));
    let n = stmt.column_count();
    let mut out = Vec::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(row) = q.next().unwrap() {
        out.push(
            (0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::from(v),
                    ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
                    ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::from(String::from_utf8_lossy(b).into_owned()),
                })
                .collect(),
        );
    }
    out
}

/// Equal as SQL values: numbers by value (decimals are exact on our side,
/// doubles on SQLite's), the rest exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn assert_same_rows(sql: &str, mut a: Vec<Vec<Value>>, mut b: Vec<Vec<Value>>, ordered: bool) {
    if !ordered {
        let key = |r: &Vec<Value>| serde_json::to_string(r).unwrap();
        // Numbers print differently (1.5 vs 1.50): sort by a normal form.
        let norm = |r: &Vec<Value>| r.iter().map(|v| v.as_f64().map_or_else(|| key(&vec![v.clone()]), |f| format!("{f:e}"))).collect::<Vec<_>>();
        a.sort_by_key(norm);
        b.sort_by_key(norm);
    }
    assert_eq!(a.len(), b.len(), "{sql}: {} rows vs SQLite's {}", a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)), "{sql}: row {i} differs:\n ours   {x:?}\n sqlite {y:?}");
    }
}

// ---------------------------------------------------------------- generated

struct Generated {
    vol: TestVolume,
    db: rusqlite::Connection,
}

/// A table with NULL tokens, negatives, decimals, timestamps and strings
/// with commas, quotes and unicode, cut into many row groups.
fn generated() -> Generated {
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let words = ["alpha", "beta", "gamma, with comma", "say \"hi\"", "naïve", "", "zeta", "Alpha", "a%b_c"];
    let mut csv = String::from("id,a,b,s,t,k\n");
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch("CREATE TABLE t (id INTEGER, a INTEGER, b REAL, s TEXT, t TEXT, k INTEGER)").unwrap();
    let mut ins = db.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)").unwrap();
    for id in 0..6000i64 {
        let a: Option<i64> = if rnd(10) == 0 { None } else { Some(rnd(2001) as i64 - 1000) };
        let b: Option<(i64, u32)> = if rnd(8) == 0 { None } else { Some((rnd(200_000) as i64 - 100_000, rnd(3) as u32 + 1)) };
        let s: Option<&str> = if rnd(12) == 0 { None } else { Some(words[rnd(words.len() as u64) as usize]) };
        let t: Option<i64> = if rnd(15) == 0 { None } else { Some(1_356_998_400 + id * 3600 + rnd(3600) as i64) };
        let k = rnd(7) as i64;
        let a_txt = a.map_or("NA".to_string(), |v| v.to_string());
        let b_txt = b.map_or(String::new(), |(m, s)| at1::value::format_decimal(at1::value::Decimal { mantissa: m, scale: s as u8 }));
        let s_txt = match s {
            None => "NA".to_string(),
            Some("") => "\"\"".to_string(),
            Some(w) if w.contains([',', '"']) => format!("\"{}\"", w.replace('"', "\"\"")),
            Some(w) => w.to_string(),
        };
        let t_txt = t.map_or("NA".to_string(), at1::value::format_timestamp_iso);
        csv.push_str(&format!("{id},{a_txt},{b_txt},{s_txt},{t_txt},{k}\n"));
        let b_real = b.map(|(m, s)| m as f64 / 10f64.powi(s as i32));
        ins.execute(rusqlite::params![id, a, b_real, s, t.map(at1::value::format_timestamp_iso), k]).unwrap();
    }
    drop(ins);
    let vol = TestVolume::new();
    let cfg = GateConfig { row_group_bytes: 8 << 10, threads: 2, keep_queryable: true, ..GateConfig::default() };
    vol.add("t.csv", csv.as_bytes(), &cfg);
    Generated { vol, db }
}

#[test]
fn every_supported_construct_matches_sqlite() {
    let g = generated();
    let object = at1::query::Source::open(&g.vol.source(), "t.csv").unwrap();
    assert!(object.table().unwrap().row_groups.len() > 20, "many row groups");
    // (query text, ordered?). `{t}` is the table: t.csv for us, t for SQLite.
    let cases: &[(&str, bool)] = &[
        ("SELECT * FROM {t} WHERE a = 17", false),
        ("SELECT id, a FROM {t} WHERE a != 0 AND a <> 5", false),
        ("SELECT id FROM {t} WHERE a < -990 OR a >= 995", false),
        ("SELECT id, b FROM {t} WHERE b <= -999.5", false),
        ("SELECT id, b FROM {t} WHERE b > 999.123", false),
        ("SELECT id FROM {t} WHERE a BETWEEN -3 AND 3", false),
        ("SELECT id FROM {t} WHERE a NOT BETWEEN -990 AND 990", false),
        ("SELECT id, s FROM {t} WHERE s IN ('alpha', 'say \"hi\"', 'naïve')", false),
        ("SELECT id FROM {t} WHERE a NOT IN (1, 2, 3) AND id < 50", false),
        ("SELECT id, s FROM {t} WHERE s LIKE 'gam%'", false),
        ("SELECT id, s FROM {t} WHERE s LIKE '%a'", false),
        ("SELECT id, s FROM {t} WHERE s LIKE 'a\\%b%' OR s LIKE 'a%b_c'", false),
        ("SELECT id FROM {t} WHERE a IS NULL", false),
        ("SELECT id FROM {t} WHERE s IS NOT NULL AND b IS NULL", false),
        ("SELECT id FROM {t} WHERE NOT (a > 0) AND (k = 1 OR k = 2)", false),
        ("SELECT id, t FROM {t} WHERE t >= '2013-03-01T00:00:00Z' AND t < '2013-03-02T00:00:00Z'", false),
        ("SELECT id, s FROM {t} WHERE s = ''", false),
        ("SELECT COUNT(*) FROM {t}", false),
        ("SELECT COUNT(*), COUNT(a), SUM(a), MIN(a), MAX(a), AVG(a) FROM {t}", false),
        ("SELECT COUNT(b), SUM(b), MIN(b), MAX(b), AVG(b) FROM {t}", false),
        ("SELECT MIN(s), MAX(s), MIN(t), MAX(t) FROM {t}", false),
        ("SELECT COUNT(*), SUM(a) FROM {t} WHERE k = 3", false),
        ("SELECT SUM(a), AVG(b) FROM {t} WHERE a > 2000", false),
        ("SELECT k, COUNT(*), SUM(a), AVG(b) FROM {t} GROUP BY k", false),
        ("SELECT s, COUNT(*) AS n FROM {t} GROUP BY s", false),
        ("SELECT k, s, MAX(a) FROM {t} WHERE a < 0 GROUP BY k, s", false),
        ("SELECT k, COUNT(*) AS n FROM {t} GROUP BY k ORDER BY n DESC, k", true),
        ("SELECT id, a FROM {t} ORDER BY a DESC NULLS LAST, id LIMIT 15", true),
        ("SELECT id, a FROM {t} ORDER BY a ASC NULLS LAST, id LIMIT 15 OFFSET 10", true),
        ("SELECT id, a FROM {t} ORDER BY a NULLS FIRST, id DESC LIMIT 20", true),
        ("SELECT id AS ident, b AS bee FROM {t} WHERE k = 6 ORDER BY bee DESC NULLS LAST, ident LIMIT 7", true),
        ("SELECT id, s FROM {t} WHERE s IS NOT NULL ORDER BY s, id LIMIT 30", true),
        ("SELECT id, t FROM {t} ORDER BY t DESC NULLS LAST, id LIMIT 5", true),
        ("SELECT * FROM {t} ORDER BY id LIMIT 3 OFFSET 100", true),
        ("SELECT id FROM {t} ORDER BY 1 DESC LIMIT 4", true),
    ];
    for (q, ordered) in cases {
        let a = ours(&g.vol, &q.replace("{t}", "t.csv"));
        assert_eq!(a["row_count"].as_u64().unwrap() as usize, a["rows"].as_array().unwrap().len());
        let b = theirs(&g.db, &q.replace("{t}", "t"));
        assert_same_rows(q, rows(&a), b, *ordered);
    }
}

#[test]
fn limit_without_order_returns_that_many_rows() {
    let g = generated();
    let r = ours(&g.vol, "SELECT id FROM t.csv WHERE a > 0 LIMIT 10");
    assert_eq!(r["row_count"], 10);
    // In file order, as both engines happen to return them.
    let b = theirs(&g.db, "SELECT id FROM t WHERE a > 0 LIMIT 10");
    assert_same_rows("limit", rows(&r), b, true);
}

#[test]
fn unsupported_and_bad_queries_get_clear_errors() {
    let g = generated();
    let source = g.vol.source();
    for (q, want) in [
        ("SELECT * FROM t.csv a JOIN t.csv b ON a.id = b.id", "JOIN"),
        ("SELECT * FROM t.csv WHERE id IN (SELECT id FROM t.csv)", "subquery"),
        ("SELECT id, ROW_NUMBER() OVER () FROM t.csv", "window"),
        ("SELECT a + 1 FROM t.csv", "a + 1"),
        ("SELECT nope FROM t.csv", "no column named nope"),
        ("SELECT * FROM ../etc/passwd", "bad path"),
        ("SELECT * FROM /etc/passwd", "bad path"),
        ("SELECT * FROM missing.csv", "missing.csv"),
        ("SELEC * FROM t.csv", "syntax"),
        ("SELECT id, COUNT(*) FROM t.csv", "GROUP BY"),
    ] {
        let err = query::execute(q, &source, None, OutputFormat::Json, &Limits::default(), &mut Vec::new()).err().unwrap_or_else(|| panic!("{q} was accepted"));
        assert!(err.to_string().contains(want), "{q}: {err}");
    }
}

#[test]
fn aggregates_come_from_roll_ups_and_predicates_prune() {
    let g = generated();
    let r = ours(&g.vol, "SELECT COUNT(*), SUM(a), MIN(a), MAX(a) FROM t.csv");
    assert_eq!(r["stats"]["bytes_read"], 0, "no data block decoded: {r}");
    let r = ours(&g.vol, "SELECT id FROM t.csv WHERE id BETWEEN 100 AND 120");
    assert_eq!(r["row_count"], 21);
    let scanned = r["stats"]["row_groups_scanned"].as_u64().unwrap();
    assert!(scanned <= 2, "id follows file order: {scanned} row groups scanned");
    let share = r["stats"]["bytes_read"].as_f64().unwrap() / r["stats"]["total_block_bytes"].as_f64().unwrap();
    assert!(share < 0.05, "read {share} of the blocks");
}

#[test]
fn csv_format_and_quoted_paths() {
    let g = generated();
    let mut out = Vec::new();
    let source = g.vol.source();
    query::execute(
        "SELECT id, s FROM \"t.csv\" WHERE id = 3 OR id = 11 ORDER BY id FORMAT CSV",
        &source,
        None,
        OutputFormat::Json,
        &Limits::default(),
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("id,s\n3,"), "{text}");
    assert_eq!(text.lines().count(), 3);
    let mut out = Vec::new();
    query::execute("SELECT COUNT(*) FROM 't.csv'", &source, None, OutputFormat::Csv, &Limits::default(), &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "COUNT(*)\n6000\n");
}

// ---------------------------------------------------------------- corpus

/// A store holding one corpus CSV, and SQLite with the same rows.
fn corpus_table(rel: &str, types: &[(&str, &str)]) -> Option<(TestVolume, rusqlite::Connection)> {
    let src = corpus_dir().join(rel);
    let data = std::fs::read(&src).ok()?;
    let vol = TestVolume::new();
    vol.add(rel, &data, &GateConfig::default());
    let db = rusqlite::Connection::open_in_memory().unwrap();
    let cols: Vec<String> = types.iter().map(|(n, t)| format!("\"{n}\" {t}")).collect();
    db.execute_batch(&format!("CREATE TABLE t ({})", cols.join(", "))).unwrap();
    let mut reader = csv_reader(&data);
    let placeholders: Vec<String> = (1..=types.len()).map(|i| format!("?{i}")).collect();
    let tx = db.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare(&format!("INSERT INTO t VALUES ({})", placeholders.join(","))).unwrap();
        for rec in reader.by_ref() {
            let vals: Vec<rusqlite::types::Value> = rec
                .iter()
                .zip(types)
                .map(|(f, (_, t))| {
                    if f == "NA" || f.is_empty() {
                        return rusqlite::types::Value::Null;
                    }
                    match *t {
                        "INTEGER" => f.parse::<i64>().map_or(rusqlite::types::Value::Null, rusqlite::types::Value::Integer),
                        "REAL" => f.parse::<f64>().map_or(rusqlite::types::Value::Null, rusqlite::types::Value::Real),
                        _ => rusqlite::types::Value::Text(f.clone()),
                    }
                })
                .collect();
            ins.execute(rusqlite::params_from_iter(vals)).unwrap();
        }
    }
    tx.commit().unwrap();
    Some((vol, db))
}

/// Minimal RFC 4180 reader for test data (header skipped).
fn csv_reader(data: &[u8]) -> std::vec::IntoIter<Vec<String>> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => rec.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                rec.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut rec));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !rec.is_empty() {
        rec.push(field);
        out.push(rec);
    }
    out.remove(0);
    out.into_iter()
}

const FLIGHTS: &[(&str, &str)] = &[
    ("year", "INTEGER"),
    ("month", "INTEGER"),
    ("day", "INTEGER"),
    ("dep_time", "INTEGER"),
    ("sched_dep_time", "INTEGER"),
    ("dep_delay", "INTEGER"),
    ("arr_time", "INTEGER"),
    ("sched_arr_time", "INTEGER"),
    ("arr_delay", "INTEGER"),
    ("carrier", "TEXT"),
    ("flight", "INTEGER"),
    ("tailnum", "TEXT"),
    ("origin", "TEXT"),
    ("dest", "TEXT"),
    ("air_time", "INTEGER"),
    ("distance", "INTEGER"),
    ("hour", "INTEGER"),
    ("minute", "INTEGER"),
    ("time_hour", "TEXT"),
];

#[test]
fn reference_queries_on_flights_give_the_documented_results() {
    let Some((vol, db)) = corpus_table("csv/flights.csv", FLIGHTS) else { return };
    let root = &vol;
    // QUERIES.md, F1..F10: (query, expected row count, expected first row).
    let f = "csv/flights.csv";
    let cases: Vec<(String, usize, Option<Value>)> = vec![
        (format!("SELECT * FROM {f} WHERE flight = 1545"), 149, Some(serde_json::json!([2013, 1, 1, 517, 515, 2, 830, 819, 11, "UA", 1545, "N14228", "EWR", "IAH", 227, 1400, 5, 15, "2013-01-01T10:00:00Z"]))),
        (format!("SELECT year, month, day, dep_delay, carrier, tailnum FROM {f} WHERE dep_delay BETWEEN 120 AND 150"), 3712, Some(serde_json::json!([2013, 1, 1, 144, "UA", "N534UA"]))),
        (format!("SELECT COUNT(*) FROM {f} WHERE origin = 'JFK' AND dest = 'LAX'"), 1, Some(serde_json::json!([11262]))),
        (format!("SELECT carrier, flight, origin, dest, distance FROM {f} WHERE distance > 2500 AND month <= 3"), 2916, Some(serde_json::json!(["UA", 1124, "EWR", "SFO", 2565]))),
        (format!("SELECT * FROM {f} WHERE arr_delay < -60 LIMIT 10"), 10, Some(serde_json::json!([2013, 1, 3, 941, 945, -4, 1153, 1258, -65, "B6", 679, "N789JB", "JFK", "LAX", 297, 2475, 9, 45, "2013-01-03T14:00:00Z"]))),
        (format!("SELECT COUNT(*), SUM(distance), MIN(dep_delay), MAX(dep_delay), AVG(air_time) FROM {f} WHERE month = 7"), 1, Some(serde_json::json!([29425, 31149199, -22, 1005, 146.72827201074472]))),
        (format!("SELECT carrier, COUNT(*) AS n, AVG(arr_delay) AS avg_arr_delay FROM {f} GROUP BY carrier ORDER BY n DESC"), 16, Some(serde_json::json!(["UA", 58665, 3.5580111453393792]))),
        (format!("SELECT origin, dest, COUNT(*) AS n FROM {f} WHERE dep_delay >= 60 GROUP BY origin, dest ORDER BY n DESC, origin, dest LIMIT 20"), 20, Some(serde_json::json!(["LGA", "ATL", 720]))),
        (format!("SELECT tailnum, dep_time, arr_time, time_hour FROM {f} WHERE time_hour >= TIMESTAMPTZ '2013-12-31 00:00:00+00' AND time_hour < TIMESTAMPTZ '2014-01-01 00:00:00+00'"), 844, Some(serde_json::json!(["N508JB", 1, 441, "2013-12-31T04:00:00Z"]))),
        (format!("SELECT * FROM {f} ORDER BY dep_delay DESC LIMIT 5"), 5, Some(serde_json::json!([2013, 1, 9, 641, 900, 1301, 1242, 1530, 1272, "HA", 51, "N384HA", "JFK", "HNL", 640, 4983, 9, 0, "2013-01-09T14:00:00Z"]))),
        // The SQLite spelling of F9, with an ISO text literal.
        (format!("SELECT tailnum, dep_time, arr_time, time_hour FROM {f} WHERE time_hour >= '2013-12-31T00:00:00Z' AND time_hour < '2014-01-01T00:00:00Z'"), 844, None),
    ];
    for (q, n, first) in &cases {
        let r = ours(root, q);
        assert_eq!(r["row_count"].as_u64().unwrap() as usize, *n, "{q}");
        if let Some(first) = first {
            let got = Value::Array(rows(&r)[0].clone());
            assert!(got.as_array().unwrap().iter().zip(first.as_array().unwrap()).all(|(a, b)| same(a, b)), "{q}: first row {got} != {first}");
        }
        // And the same rows as SQLite (which orders F10's ties and sorts
        // NULLs differently; the queries here avoid both).
        let sqlite_q = q
            .replace(f, "t")
            .replace("TIMESTAMPTZ '2013-12-31 00:00:00+00'", "'2013-12-31T00:00:00Z'")
            .replace("TIMESTAMPTZ '2014-01-01 00:00:00+00'", "'2014-01-01T00:00:00Z'");
        let ordered = q.contains("ORDER BY") && !q.contains("dep_delay DESC LIMIT 5");
        if q.contains("LIMIT 10") && !q.contains("ORDER") {
            continue; // LIMIT without ORDER BY: only the count is defined
        }
        assert_same_rows(q, rows(&r), theirs(&db, &sqlite_q), ordered);
    }
}

#[test]
fn weather_queries_match_sqlite() {
    let types: &[(&str, &str)] = &[
        ("origin", "TEXT"),
        ("year", "INTEGER"),
        ("month", "INTEGER"),
        ("day", "INTEGER"),
        ("hour", "INTEGER"),
        ("temp", "REAL"),
        ("dewp", "REAL"),
        ("humid", "REAL"),
        ("wind_dir", "INTEGER"),
        ("wind_speed", "REAL"),
        ("wind_gust", "REAL"),
        ("precip", "REAL"),
        ("pressure", "REAL"),
        ("visib", "REAL"),
        ("time_hour", "TEXT"),
    ];
    let Some((vol, db)) = corpus_table("csv/weather.csv", types) else { return };
    for (q, ordered) in [
        ("SELECT origin, COUNT(*), AVG(temp), MIN(pressure), MAX(wind_gust), SUM(precip) FROM {t} GROUP BY origin", false),
        ("SELECT * FROM {t} WHERE temp > 99 AND humid < 30", false),
        ("SELECT time_hour, temp FROM {t} WHERE wind_gust IS NULL AND pressure BETWEEN 1040 AND 1050", false),
        ("SELECT month, AVG(visib) AS v FROM {t} WHERE origin = 'JFK' GROUP BY month ORDER BY v DESC, month", true),
        ("SELECT origin, time_hour, wind_speed FROM {t} ORDER BY wind_speed DESC NULLS LAST, time_hour, origin LIMIT 10", true),
    ] {
        let a = ours(&vol, &q.replace("{t}", "csv/weather.csv"));
        assert_same_rows(q, rows(&a), theirs(&db, &q.replace("{t}", "t")), ordered);
    }
}

// ---------------------------------------------------------------- mount

#[test]
fn sql_file_through_the_mount() {
    let Some(m) = Mounted::new(&[]) else { return };
    let src = corpus_dir().join("csv/weather.csv");
    if !src.exists() {
        return;
    }
    std::fs::create_dir(m.path("data")).unwrap();
    sh_ok(&format!("cp '{}' '{}'", src.display(), m.path("data/weather.csv").display()));
    let sql = m.path(".at1/sql");
    // (b) echo then cat, in one shell session.
    let out = sh_ok(&format!("echo \"SELECT COUNT(*) FROM data/weather.csv WHERE origin = 'JFK'\" > '{0}' && cat '{0}'", sql.display()));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0], 8706);
    assert!(v["stats"]["total_block_bytes"].as_u64().unwrap() > 0);
    // Two sessions never see each other's results.
    let a = sh_ok(&format!("setsid bash -c \"echo 'SELECT COUNT(*) FROM data/weather.csv' > '{0}'; sleep 1; cat '{0}'\" & sleep 0.3; setsid bash -c \"echo 'SELECT MAX(temp) FROM data/weather.csv' > '{0}'; cat '{0}'\"; wait", sql.display()));
    let heads: Vec<&str> = a.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(heads.len(), 2, "{a}");
    assert!(heads.iter().any(|h| h.contains("\"COUNT(*)\"")) && heads.iter().any(|h| h.contains("\"MAX(temp)\"")), "each session read its own result:\n{a}");
    // A session whose leader has exited (a script started by `setsid`, a
    // CI runner) is still a session: its result is kept.
    let out =
        sh_ok(&format!("setsid bash -c \"(sleep 0.3; echo 'SELECT COUNT(*) FROM data/weather.csv' > '{0}' && cat '{0}') & exit 0\" | cat", sql.display()));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][0], 26115, "{out}");
    // (a) One read-write handle: the result of the query written on it.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&sql).unwrap();
    use std::io::{Read, Write};
    f.write_all(b"SELECT origin, COUNT(*) AS n FROM data/weather.csv GROUP BY origin ORDER BY origin").unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rows"], serde_json::json!([["EWR", 8703], ["JFK", 8706], ["LGA", 8706]]));
    // A bad query fails its write with EINVAL and reads back as an error.
    let (code, _, err) = sh(&format!("echo 'SELECT nope FROM data/weather.csv' > '{0}'", sql.display()));
    assert!(code != 0 && err.contains("Invalid argument"), "{err}");
    let out = sh_ok(&format!("echo 'SELEC x FROM y' > '{0}' ; cat '{0}'", sql.display()));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["error"].as_str().unwrap().contains("syntax"), "{v}");
    // A large result (over the in-memory bound) streams back whole.
    let out = sh_ok(&format!("echo 'SELECT * FROM data/weather.csv' > '{0}' && cat '{0}' | tail -c 400", sql.display()));
    assert!(out.contains("\"row_count\": 26115"), "{out}");
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(m.path(".at1/stats")).unwrap()).unwrap();
    assert!(stats["queries"].as_u64().unwrap() >= 5);
    assert!(stats["query_bytes_read"].as_u64().unwrap() > 0);
    assert!(stats["query_bytes_total"].as_u64().unwrap() > stats["query_bytes_read"].as_u64().unwrap());
}

#[test]
fn at1_sql_command_on_a_store_a_mount_and_a_file() {
    let Some(m) = Mounted::new(&[]) else { return };
    let src = corpus_dir().join("csv/seattle-weather.csv");
    if !src.exists() {
        return;
    }
    sh_ok(&format!("cp '{}' '{}'", src.display(), m.path("sw.csv").display()));
    let q = "SELECT weather, COUNT(*) AS n FROM sw.csv GROUP BY weather ORDER BY n DESC LIMIT 1";
    for root in [m.mnt.clone(), m.store.clone()] {
        let out = sh_ok(&format!("'{}' sql '{}' \"{q}\"", at1_bin().display(), root.display()));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["rows"][0], serde_json::json!(["sun", 714]), "{}", root.display());
    }
    // A single CSV or .at1 file; --format csv.
    let out = sh_ok(&format!("'{}' sql '{}' \"SELECT COUNT(*) FROM seattle-weather.csv\" --format csv", at1_bin().display(), src.display()));
    assert_eq!(out, "COUNT(*)\n1461\n");
}

#[test]
fn at1_sql_on_a_file_refuses_a_from_naming_another_table() {
    let src = corpus_dir().join("csv/seattle-weather.csv");
    if !src.exists() {
        return;
    }
    let (code, out, err) = sh(&format!("'{}' sql '{}' \"SELECT COUNT(*) FROM other.csv\"", at1_bin().display(), src.display()));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("other.csv") && err.contains("seattle-weather.csv") && err.lines().count() == 1, "{err}");
}
