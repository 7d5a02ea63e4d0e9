//! Feeds arbitrary bytes straight to the payload decoders (footer body,
//! column chunk, row layout, integer streams): the pieces a corrupt object
//! would reach only after its checksums, fuzzed without them.
#![no_main]

use at1::codec::columnar;
use at1::codec::ints::decode_ints;
use at1::format::wire::WireReader;
use at1::format::Footer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            let _ = Footer::decode(rest);
        }
        1 => {
            // Any dictionary reference resolves to a small one, so chunks
            // that use a file dictionary are decoded too.
            let shared = |b: u32| Ok(std::sync::Arc::new(columnar::SharedStrings::new(b, &[b"a", b"b"])));
            if let Ok(chunk) = columnar::decode_column(rest, &shared) {
                let d = at1::format::Dialect { delimiter: b',', quote: Some(b'"'), terminator: at1::format::LineTerminator::Lf, has_header: false };
                let mut out = Vec::new();
                for row in 0..chunk.rows() {
                    let _ = chunk.write_field(row, &d, &mut out);
                    let _ = chunk.scalar(row, Some(b'"'));
                }
            }
        }
        2 => {
            let _ = columnar::decode_layout(rest, 1 << 16);
        }
        _ => {
            let mut r = WireReader::new(rest);
            let n = usize::from(rest.first().copied().unwrap_or(0)) * 16;
            let _ = decode_ints(&mut r, n);
        }
    }
});
