//! The gate: the one way bytes become an `.at1` object. Every writer — `at1
//! compress`, the mount's close/fsync, later appends and ingest — calls
//! [`compress_to_path`] (or [`compress_to_writer`]).
//!
//! ```text
//!  input ─► chunker thread ─► units ─► N workers: encode, then decode the
//!  (SHA-256    (sniff, cut     (bounded    stored bytes with the reader's own
//!   of input)   frames/rows)    channel)   decoder and compare byte for byte
//!                                          │
//!      writer (this thread) ◄──────────────┘ results, reordered by sequence
//!      SHA-256 of the decoded stream; blocks to a temp file in the
//!      destination directory; footer; trailer; fsync; re-open and check
//!      every block; only then rename into place and fsync the directory.
//! ```
//!
//! Nothing is committed unless every unit decoded back to its input and the
//! SHA-256 of the decoded stream equals the SHA-256 of the input. On any
//! failure the temp file is removed and the destination is untouched.
//!
//! Memory is bounded by configuration, not input size: the chunker holds at
//! most one chunk (`chunk_lines`, capped at [`CHUNK_BYTES_MAX`]), and the
//! channels hold at most `2 × threads` units each way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::codec::backend::{self, BlockCompressor};
use crate::codec::columnar::{self, SharedStrings, Sniffed};
use crate::codec::ints::IntPacking;
use crate::codec::{decode_segment, BlockSource, CodecError};
use crate::format::{
    self, crc32c, encode_header, Backend, BlockDesc, BlockRole, CodecChoice, ColumnDef, ColumnStats, Dialect, Footer, RowGroupMeta, RowGroupStorage, Segment,
    SegmentKind, Settings, Table, Trailer, VerifiedBlock, HEADER_LEN,
};
use crate::reader::Object;
use crate::value::ValueType;

/// Upper bound on one chunk of input held in memory.
pub const CHUNK_BYTES_MAX: usize = 16 << 20;
/// A record longer than this is not treated as CSV: the rest of the input is
/// stored raw (a quote that never closes must not pull the file into memory).
pub const MAX_RECORD_BYTES: usize = 8 << 20;
/// Size of the per-file zstd dictionary trained for raw frames.
pub const DICTIONARY_BYTES: usize = 32 << 10;
/// The zstd level at which a dictionary's gain is probed.
const DICTIONARY_PROBE_LEVEL: i32 = 9;
/// Bytes of the first chunk the dictionary is trained on.
const DICTIONARY_SAMPLE_BYTES: usize = 4 << 20;
/// Bytes of the first chunk of a table whose values choose the column
/// dictionaries. Tail numbers of flights.csv are stored 2% larger with a
/// dictionary from 8 MiB than from the whole 16 MiB chunk, 5% from 4 MiB.
const COLUMN_DICTIONARY_SAMPLE_BYTES: usize = 8 << 20;

/// Settings of one compression.
#[derive(Debug, Clone)]
pub struct GateConfig {
    pub codec: CodecChoice,
    pub backend: Backend,
    /// Level for raw frames: zstd 1..=22, or xz preset 0..=9 (10 = `-9e`).
    pub level: i32,
    /// Level for column chunks and row layouts.
    pub column_level: i32,
    /// Original bytes per raw frame.
    pub frame_size: usize,
    pub row_group_rows: usize,
    /// Original bytes per row group (a longer single record is its own).
    pub row_group_bytes: usize,
    pub chunk_lines: usize,
    /// Keep every row group columnar even where raw would be smaller.
    pub keep_queryable: bool,
    /// Train a per-file zstd dictionary for raw frames, and keep per-file
    /// dictionaries of repeating string columns.
    pub dictionary: bool,
    pub threads: usize,
}

/// Text in raw frames gains ~25% from zstd 19 over the fast levels, and the
/// ratio is what the store is for.
pub const DEFAULT_ZSTD_LEVEL: i32 = 19;
/// Typed column chunks gain under 2% from level 19 over 9 and compress three
/// times faster at 9 (BENCHMARKS.md), so columns default lower. Since integer
/// streams are byte planes, bit-packed or dictionary indices chosen by trial
/// (ints.rs), levels 5 and 9 give the same size within 0.2% on flights.csv
/// and weather.csv, and 5 leaves the trials their time.
pub const DEFAULT_ZSTD_COLUMN_LEVEL: i32 = 5;
pub const DEFAULT_XZ_LEVEL: i32 = 9;

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            codec: CodecChoice::Auto,
            backend: Backend::Zstd,
            level: DEFAULT_ZSTD_LEVEL,
            column_level: DEFAULT_ZSTD_COLUMN_LEVEL,
            frame_size: 128 << 10,
            row_group_rows: 65_536,
            row_group_bytes: 128 << 10,
            chunk_lines: 500_000,
            keep_queryable: false,
            dictionary: true,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl GateConfig {
    /// Sets the backend with its default levels.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        (self.level, self.column_level) = match backend {
            Backend::Xz => (DEFAULT_XZ_LEVEL, DEFAULT_XZ_LEVEL),
            _ => (DEFAULT_ZSTD_LEVEL, DEFAULT_ZSTD_COLUMN_LEVEL),
        };
        self
    }

    /// The same layout at zstd's fast level (3): what a mount commits at
    /// `close`, so a write costs what zstd's default costs, before the
    /// volume re-encodes the content at this configuration's own levels
    /// in the background. `None` when this configuration is no slower.
    pub fn fast_variant(&self) -> Option<GateConfig> {
        const FAST: i32 = 3;
        let fast = GateConfig { backend: Backend::Zstd, level: FAST, column_level: self.column_level.min(FAST), ..self.clone() };
        let already_fast = self.backend == Backend::Zstd && self.level <= FAST && self.column_level <= FAST;
        (!already_fast).then_some(fast)
    }

    /// Sets one level for frames and columns alike.
    pub fn with_level(mut self, level: i32) -> Self {
        self.level = level;
        self.column_level = level;
        self
    }

    fn settings(&self) -> Settings {
        Settings {
            codec: self.codec,
            backend: self.backend,
            level: self.level,
            column_level: self.column_level,
            frame_size: self.frame_size as u64,
            row_group_rows: self.row_group_rows as u64,
            row_group_bytes: self.row_group_bytes as u64,
            chunk_lines: self.chunk_lines as u64,
            keep_queryable: self.keep_queryable,
            writer: concat!("at1fs ", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// Integer packing for this backend: with a backend behind it, each
    /// stream takes whichever of its forms compresses smallest (ints.rs);
    /// stored blocks keep minimal bit widths.
    fn packing(&self) -> IntPacking {
        match self.backend {
            Backend::Stored => IntPacking::Bits,
            _ => IntPacking::Trial,
        }
    }
}

/// Why nothing was committed.
#[derive(Debug, Error)]
pub enum GateError {
    /// The decode check failed: the encoded form does not give back the
    /// input. Names the unit and the first original offset that differs.
    #[error("verification failed, nothing was committed: {0}")]
    Rejected(String),
    #[error("the input is not a delimited table (--codec columnar needs CSV/TSV)")]
    NotATable,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("encoder error: {0}")]
    Codec(#[from] CodecError),
}

/// What was committed.
#[derive(Debug, Clone)]
pub struct CommitReport {
    pub original_len: u64,
    pub stored_len: u64,
    pub sha256: [u8; 32],
    pub blocks: usize,
    pub segments: usize,
    pub row_groups: usize,
    /// Row groups kept raw because that was smaller.
    pub raw_row_groups: usize,
}

// ---------------------------------------------------------------- units

/// A piece of work for an encoder thread.
struct Unit {
    seq: u64,
    kind: UnitKind,
}

enum UnitKind {
    /// Bytes kept in the footer (BOM, CSV header).
    Literal(Vec<u8>),
    /// The per-file dictionary (not part of the original).
    Dictionary(Arc<Dictionary>),
    /// A per-file column dictionary (not part of the original).
    ColumnDictionary(Arc<SharedStrings>),
    Frame {
        text: Vec<u8>,
        dict: Option<Arc<Dictionary>>,
    },
    RowGroup {
        text: Vec<u8>,
        at_eof: bool,
        table: Arc<TableShape>,
    },
}

struct Dictionary {
    /// Global block id (the dictionary is always written first).
    block_id: u32,
    bytes: Vec<u8>,
}

/// What every row group of a table shares.
struct TableShape {
    dialect: Dialect,
    column_names: Vec<String>,
    /// The file's dictionary of each column, if it has one.
    dictionaries: Vec<Option<Arc<SharedStrings>>>,
}

/// One encoded block, before it has an id in the object.
struct EncodedBlock {
    stored: Vec<u8>,
    desc: BlockDesc,
}

enum Encoded {
    Literal(Vec<u8>),
    Dictionary(EncodedBlock),
    /// A column dictionary and the block id its users name.
    ColumnDictionary(EncodedBlock, u32),
    Frame {
        block: EncodedBlock,
        dict: Option<Arc<Dictionary>>,
    },
    RowGroup {
        blocks: Vec<EncodedBlock>,
        storage: RowGroupStorage,
        rows: u64,
        stats: Vec<ColumnStats>,
        table: Arc<TableShape>,
    },
}

/// A verified unit: its blocks and the bytes they decoded back to.
struct Verified {
    seq: u64,
    encoded: Encoded,
    decoded: Vec<u8>,
}

// ---------------------------------------------------------------- API

/// Compresses `input` into a new object at `dest`, replacing any file there
/// only after the whole object was verified and made durable.
pub fn compress_to_path<R: Read + Send>(input: R, dest: &Path, cfg: &GateConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<CommitReport, GateError> {
    compress_to_path_with(input, dest, cfg, progress, |_| Ok(()))
}

/// [`compress_to_path`], calling `finish` on the verified, durable temp file
/// just before it is renamed into place (to give it a mode and times, say;
/// `finish` makes durable what it changes).
pub fn compress_to_path_with<R: Read + Send>(
    input: R,
    dest: &Path,
    cfg: &GateConfig,
    progress: &(dyn Fn(u64) + Sync),
    finish: impl FnOnce(&File) -> io::Result<()>,
) -> Result<CommitReport, GateError> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = temp_file_in(dir)?;
    let report = write_object(input, temp.as_file_mut(), cfg, progress)?;
    audit(temp.as_file(), &report)?;
    temp.as_file().sync_all()?;
    finish(temp.as_file())?;
    temp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(report)
}

/// Compresses `input` into `file` (an object store's temp file, say), read
/// back and checked before this returns. Neither synced nor published:
/// that is the caller's (the object store's put and sync).
pub fn compress_to_file<R: Read + Send>(input: R, file: &mut File, cfg: &GateConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<CommitReport, GateError> {
    let report = write_object(input, file, cfg, progress)?;
    audit(file, &report)?;
    Ok(report)
}

/// Compresses `input` and writes the verified object to `out` (e.g. stdout).
/// The object is built and checked in a temp file first, so `out` only ever
/// receives a verified object.
pub fn compress_to_writer<R: Read + Send>(input: R, out: &mut dyn Write, cfg: &GateConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<CommitReport, GateError> {
    let mut temp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile()?;
    let report = write_object(input, temp.as_file_mut(), cfg, progress)?;
    audit(temp.as_file(), &report)?;
    let mut f = File::open(temp.path())?;
    io::copy(&mut f, out)?;
    out.flush()?;
    Ok(report)
}

/// Writes a file at `dest` atomically: `fill` writes a temp file in the same
/// directory, then fsync, rename, fsync of the directory. If `fill` fails the
/// temp file is removed and `dest` is untouched. The commit step of the
/// gate, also used for decompressed output.
pub fn atomic_write_with<E: From<io::Error>>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<(), E>) -> Result<(), E> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = temp_file_in(dir)?;
    fill(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(())
}

/// Temp files that become outputs: named `.at1-tmp-*` (so stale ones are
/// recognisable) and created 0666 minus the umask, like any new file.
pub const TEMP_PREFIX: &str = ".at1-tmp-";

/// Made here rather than by tempfile's builder, whose errors name the
/// random temp path: a caller's error names the destination instead.
fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let path = dir.join(format!("{TEMP_PREFIX}{}", random_hex()?));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o666).custom_flags(libc::O_CLOEXEC).open(&path) {
            Ok(file) => return Ok(tempfile::NamedTempFile::from_parts(file, tempfile::TempPath::try_from_path(path)?)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// 64 random bits in hex.
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the buffer.
    if unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) } != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Re-opens the written temp file through the reader and checks what the
/// write path could have got wrong after the decode check: the trailer, the
/// footer, and every block's CRC as read back from disk.
fn audit(file: &File, report: &CommitReport) -> Result<(), GateError> {
    let object = Object::open_file(file.try_clone()?).map_err(|e| GateError::Rejected(format!("the written object does not read back: {e}")))?;
    object.check_all_blocks().map_err(|e| GateError::Rejected(format!("the written object does not read back: {e}")))?;
    if object.trailer().original_sha256 != report.sha256 || object.original_len() != report.original_len {
        return Err(GateError::Rejected("the written trailer does not match the input".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------- pipeline

fn write_object<R: Read + Send>(input: R, file: &mut File, cfg: &GateConfig, progress: &(dyn Fn(u64) + Sync)) -> Result<CommitReport, GateError> {
    let threads = cfg.threads.max(1);
    let (unit_tx, unit_rx) = bounded::<Unit>(threads * 2);
    let (done_tx, done_rx) = bounded::<Result<Verified, GateError>>(threads * 2);
    std::thread::scope(|scope| {
        let chunker = scope.spawn(move || chunk_input(input, cfg, &unit_tx));
        for _ in 0..threads {
            let (rx, tx) = (unit_rx.clone(), done_tx.clone());
            scope.spawn(move || encode_worker(cfg, &rx, &tx));
        }
        drop(done_tx);
        drop(unit_rx);
        let written = write_units(file, cfg, &done_rx, progress);
        // On an early error, dropping the receiver unblocks the workers and
        // then the chunker, so the scope can end.
        drop(done_rx);
        let chunked = chunker.join().map_err(|_| GateError::Rejected("the input reader panicked".into()))?;
        // The writer's error first: when it stops (disk full, say), the
        // chunker only sees a closed channel.
        let mut written = written?;
        let (input_sha, input_len, shape) = chunked?;
        if written.decoded_sha != input_sha || written.decoded_len != input_len {
            return Err(GateError::Rejected(format!(
                "SHA-256 of the decoded stream ({} bytes) differs from the input's ({input_len} bytes)",
                written.decoded_len
            )));
        }
        finish_object(file, cfg, &mut written, shape.as_deref(), input_sha)
    })
}

/// The chunker's result: SHA-256 and length of the input, and the table
/// shape if the input was read as a table.
type Chunked = (Vec<u8>, u64, Option<Arc<TableShape>>);

/// Reads the input in chunks, decides how to encode it, and cuts it into
/// units. Runs on its own thread; stops early if the receivers are gone.
fn chunk_input<R: Read>(input: R, cfg: &GateConfig, tx: &Sender<Unit>) -> Result<Chunked, GateError> {
    let mut reader = HashingReader { inner: input, sha: Sha256::new(), len: 0 };
    let mut cutter = Cutter { cfg, tx, seq: 0, dict: None, shape: None, prefix: 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut at_eof = read_chunk(&mut reader, &mut buf, cfg.chunk_lines)?;
    let sniffed = match cfg.codec {
        CodecChoice::Raw => None,
        CodecChoice::Auto => columnar::sniff(&buf[..buf.len().min(1 << 20)], at_eof && buf.len() <= 1 << 20),
        CodecChoice::Columnar => Some(columnar::sniff(&buf[..buf.len().min(1 << 20)], at_eof && buf.len() <= 1 << 20).ok_or(GateError::NotATable)?),
    };
    let mut mode = match sniffed {
        Some(s) => {
            cutter.start_table(&buf, s)?;
            let prefix = cutter.prefix_len();
            buf.drain(..prefix);
            Mode::Table
        }
        None => {
            cutter.start_raw(&buf, at_eof)?;
            Mode::Raw
        }
    };
    loop {
        let consumed = match mode {
            Mode::Table => cutter.cut_rows(&buf, at_eof)?,
            Mode::Raw => cutter.cut_frames(&buf, at_eof)?,
        };
        buf.drain(..consumed);
        if mode == Mode::Table && buf.len() > MAX_RECORD_BYTES && consumed == 0 {
            // One record larger than any sane row: stop reading a table.
            mode = Mode::Raw;
            continue;
        }
        if at_eof && buf.is_empty() {
            break;
        }
        if at_eof {
            // Only a partial record is left at EOF; cut_rows takes it whole
            // when at_eof, so this is unreachable unless a unit was refused.
            return Err(GateError::Rejected("input could not be cut into units".into()));
        }
        at_eof = read_chunk(&mut reader, &mut buf, cfg.chunk_lines)?;
    }
    Ok((reader.sha.finalize().to_vec(), reader.len, cutter.shape))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Table,
    Raw,
}

/// Appends up to one chunk (`chunk_lines` lines, at most CHUNK_BYTES_MAX
/// bytes) to `buf`. Returns true at end of input.
fn read_chunk(reader: &mut impl Read, buf: &mut Vec<u8>, chunk_lines: usize) -> io::Result<bool> {
    let start = buf.len();
    let mut lines = 0usize;
    let mut piece = vec![0u8; 1 << 20];
    while buf.len() - start < CHUNK_BYTES_MAX {
        let n = match reader.read(&mut piece) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += memchr::memchr_iter(b'\n', &piece[..n]).count();
        buf.extend_from_slice(&piece[..n]);
        if lines >= chunk_lines.max(1) {
            break;
        }
    }
    Ok(false)
}

struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    len: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Cuts chunks into units and sends them, numbering them in order.
struct Cutter<'a> {
    cfg: &'a GateConfig,
    tx: &'a Sender<Unit>,
    seq: u64,
    dict: Option<Arc<Dictionary>>,
    shape: Option<Arc<TableShape>>,
    /// Bytes before the first row (BOM, header), sent as a literal.
    prefix: usize,
}

impl Cutter<'_> {
    fn send(&mut self, kind: UnitKind) -> Result<(), GateError> {
        let unit = Unit { seq: self.seq, kind };
        self.seq += 1;
        // A closed channel means the writer stopped on an error it reports.
        self.tx.send(unit).map_err(|_| GateError::Rejected("encoding stopped".into()))
    }

    fn start_table(&mut self, buf: &[u8], sniffed: Sniffed) -> Result<(), GateError> {
        if sniffed.prefix_len > 0 {
            self.send(UnitKind::Literal(buf[..sniffed.prefix_len].to_vec()))?;
        }
        let dictionaries = self.column_dictionaries(&buf[sniffed.prefix_len..], &sniffed)?;
        self.shape = Some(Arc::new(TableShape { dialect: sniffed.dialect, column_names: sniffed.column_names, dictionaries }));
        self.prefix = sniffed.prefix_len;
        Ok(())
    }

    /// Chooses the column dictionaries on the start of the table and sends
    /// them first, so that they are blocks 0, 1, ... in order.
    fn column_dictionaries(&mut self, body: &[u8], sniffed: &Sniffed) -> Result<Vec<Option<Arc<SharedStrings>>>, GateError> {
        if !self.cfg.dictionary {
            return Ok(Vec::new());
        }
        let sample = &body[..body.len().min(COLUMN_DICTIONARY_SAMPLE_BYTES)];
        let mut next_block = 0u32;
        let mut out = Vec::new();
        for entries in columnar::dictionary::choose_entries(sample, &sniffed.dialect, sniffed.column_names.len(), self.cfg.row_group_bytes) {
            let dict = entries.map(|e| {
                let refs: Vec<&[u8]> = e.iter().map(Vec::as_slice).collect();
                next_block += 1;
                Arc::new(SharedStrings::new(next_block - 1, &refs))
            });
            if let Some(d) = &dict {
                self.send(UnitKind::ColumnDictionary(d.clone()))?;
            }
            out.push(dict);
        }
        Ok(out)
    }

    fn prefix_len(&self) -> usize {
        self.prefix
    }

    /// Trains the file's dictionary on the first chunk when there will be
    /// enough frames for it to pay off.
    fn start_raw(&mut self, first_chunk: &[u8], at_eof: bool) -> Result<(), GateError> {
        let frames = first_chunk.len() / self.cfg.frame_size.max(1);
        if !self.cfg.dictionary || self.cfg.backend != Backend::Zstd || (frames < 4 && at_eof) || frames < 2 {
            return Ok(());
        }
        let sample = &first_chunk[..first_chunk.len().min(DICTIONARY_SAMPLE_BYTES)];
        let samples: Vec<&[u8]> = sample.chunks(4096).collect();
        let Some(bytes) = backend::train_dictionary(&samples, DICTIONARY_BYTES) else { return Ok(()) };
        if dictionary_pays_off(&bytes, first_chunk, self.cfg.frame_size.max(1)) {
            let dict = Arc::new(Dictionary { block_id: 0, bytes });
            self.send(UnitKind::Dictionary(dict.clone()))?;
            self.dict = Some(dict);
        }
        Ok(())
    }

    /// Sends whole frames; at EOF also the last short one. Returns the bytes
    /// consumed.
    fn cut_frames(&mut self, buf: &[u8], at_eof: bool) -> Result<usize, GateError> {
        let size = self.cfg.frame_size.max(1);
        let mut pos = 0;
        while buf.len() - pos >= size || (at_eof && pos < buf.len()) {
            let end = (pos + size).min(buf.len());
            self.send(UnitKind::Frame { text: buf[pos..end].to_vec(), dict: self.dict.clone() })?;
            pos = end;
        }
        Ok(pos)
    }

    /// Sends row groups of whole records. Returns the bytes consumed; a
    /// trailing partial record stays for the next chunk.
    fn cut_rows(&mut self, buf: &[u8], at_eof: bool) -> Result<usize, GateError> {
        let Some(shape) = self.shape.clone() else { return Ok(0) };
        let d = shape.dialect;
        let mut fields = Vec::new();
        let (mut group_start, mut rows, mut pos) = (0usize, 0usize, 0usize);
        while pos < buf.len() {
            fields.clear();
            let Some(rec) = columnar::scan_record(buf, pos, d.delimiter, d.quote, at_eof, &mut fields) else { break };
            // A record that would push the group past its byte bound starts
            // the next group (a single longer record is a group of its own).
            if rows > 0 && rec.end - group_start > self.cfg.row_group_bytes {
                self.send(UnitKind::RowGroup { text: buf[group_start..pos].to_vec(), at_eof: false, table: shape.clone() })?;
                group_start = pos;
                rows = 0;
            }
            pos = rec.end;
            rows += 1;
            if rows >= self.cfg.row_group_rows.min(format::MAX_ROW_GROUP_ROWS as usize) {
                let last = at_eof && pos == buf.len();
                self.send(UnitKind::RowGroup { text: buf[group_start..pos].to_vec(), at_eof: last, table: shape.clone() })?;
                group_start = pos;
                rows = 0;
            }
        }
        if at_eof && group_start < pos {
            self.send(UnitKind::RowGroup { text: buf[group_start..pos].to_vec(), at_eof: true, table: shape.clone() })?;
            group_start = pos;
        }
        Ok(group_start)
    }
}

// ---------------------------------------------------------------- workers

fn encode_worker(cfg: &GateConfig, rx: &Receiver<Unit>, tx: &Sender<Result<Verified, GateError>>) {
    let mut compressors = Compressors { frames: BlockCompressor::new(cfg.backend, cfg.level), columns: BlockCompressor::new(cfg.backend, cfg.column_level) };
    for unit in rx.iter() {
        let result = encode_and_verify(unit, cfg, &mut compressors);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
    }
}

/// A worker's compressors: one per level in use.
struct Compressors {
    frames: BlockCompressor,
    columns: BlockCompressor,
}

fn encode_and_verify(unit: Unit, cfg: &GateConfig, compressors: &mut Compressors) -> Result<Verified, GateError> {
    let seq = unit.seq;
    let (encoded, original) = match unit.kind {
        UnitKind::Literal(bytes) => (Encoded::Literal(bytes.clone()), bytes),
        UnitKind::Dictionary(dict) => {
            // The dictionary itself is compressed without a dictionary.
            let mut plain = BlockCompressor::new(Backend::Zstd, DEFAULT_ZSTD_LEVEL);
            let block = make_block(&mut plain, &dict.bytes, BlockRole::Dictionary, None)?;
            let back = LocalSource { blocks: std::slice::from_ref(&block), dict: None, shared: &[] }.payload(0)?;
            if back.as_slice() != dict.bytes.as_slice() {
                return Err(GateError::Rejected("the dictionary block does not decode to the dictionary".into()));
            }
            (Encoded::Dictionary(block), Vec::new())
        }
        UnitKind::ColumnDictionary(dict) => {
            let payload = dict.encode();
            let block = make_block(&mut compressors.columns, &payload, BlockRole::ColumnDictionary, None)?;
            let back = LocalSource { blocks: std::slice::from_ref(&block), dict: None, shared: &[] }.payload(0)?;
            if SharedStrings::decode(dict.block, &back).ok().as_ref() != Some(&*dict) {
                return Err(GateError::Rejected("a column dictionary block does not decode to the dictionary".into()));
            }
            (Encoded::ColumnDictionary(block, dict.block), Vec::new())
        }
        UnitKind::Frame { text, dict } => {
            let payload = fault_injection::maybe_corrupt(&text);
            let block = make_block(&mut compressors.frames, &payload, BlockRole::Frame, dict.as_deref())?;
            (Encoded::Frame { block, dict }, text)
        }
        UnitKind::RowGroup { text, at_eof, table } => (encode_row_group(&text, at_eof, &table, cfg, compressors)?, text),
    };
    let decoded = decode_unit(&encoded, seq)?;
    if decoded != original {
        let at = decoded.iter().zip(&original).position(|(a, b)| a != b).unwrap_or(decoded.len().min(original.len()));
        return Err(GateError::Rejected(format!("unit {seq} ({}) decodes differently from its input at byte {at} of {}", encoded.describe(), original.len())));
    }
    Ok(Verified { seq, encoded, decoded })
}

impl Encoded {
    fn describe(&self) -> String {
        match self {
            Encoded::Literal(_) => "literal".into(),
            Encoded::Dictionary(_) => "dictionary block".into(),
            Encoded::ColumnDictionary(..) => "column dictionary block".into(),
            Encoded::Frame { block, .. } => format!("frame block, {} backend", block.desc.backend.name()),
            Encoded::RowGroup { storage: RowGroupStorage::Raw { .. }, .. } => "row group kept raw".into(),
            Encoded::RowGroup { blocks, .. } => format!("columnar row group of {} blocks", blocks.len()),
        }
    }
}

/// Compresses one payload into a block whose descriptor is complete but for
/// its offset.
fn make_block(compressor: &mut BlockCompressor, payload: &[u8], role: BlockRole, dict: Option<&Dictionary>) -> Result<EncodedBlock, GateError> {
    let (stored, backend) = compressor.compress(payload, dict.map(|d| (d.block_id, d.bytes.as_slice())))?;
    let desc = BlockDesc {
        offset: 0,
        stored_len: stored.len() as u64,
        decoded_len: payload.len() as u64,
        crc32c: crc32c(&stored),
        backend,
        role,
        dict: dict.filter(|_| backend == Backend::Zstd).map(|d| d.block_id),
    };
    Ok(EncodedBlock { stored, desc })
}

/// Encodes a row group as columns and, unless the layout must stay
/// queryable, also as one raw frame; keeps the smaller.
fn encode_row_group(text: &[u8], at_eof: bool, shape: &Arc<TableShape>, cfg: &GateConfig, compressors: &mut Compressors) -> Result<Encoded, GateError> {
    let n_columns = shape.column_names.len();
    let enc = columnar::encode_row_group(text, &shape.dialect, n_columns, at_eof, cfg.packing(), &shape.dictionaries)?;
    let mut blocks = Vec::with_capacity(n_columns + 1);
    let layout = match &enc.layout {
        Some(l) => {
            blocks.push(make_block(&mut compressors.columns, l, BlockRole::RowLayout, None)?);
            Some(0)
        }
        None => None,
    };
    let mut columns = Vec::with_capacity(n_columns);
    let mut stats = Vec::with_capacity(n_columns);
    for chunk in enc.columns {
        columns.push(blocks.len() as u32);
        let payload = fault_injection::maybe_corrupt_within(&chunk.payload, text);
        blocks.push(make_block(&mut compressors.columns, &payload, BlockRole::Column, None)?);
        stats.push(chunk.stats);
    }
    let columnar_bytes: u64 = blocks.iter().map(|b| b.desc.stored_len).sum();
    if cfg.codec == CodecChoice::Auto && !cfg.keep_queryable && raw_might_win(text, columnar_bytes) {
        let frame = make_block(&mut compressors.frames, text, BlockRole::Frame, None)?;
        if frame.desc.stored_len < columnar_bytes {
            let storage = RowGroupStorage::Raw { block: 0 };
            return Ok(Encoded::RowGroup { blocks: vec![frame], storage, rows: enc.rows, stats, table: shape.clone() });
        }
    }
    let storage = RowGroupStorage::Columnar { layout, columns };
    Ok(Encoded::RowGroup { blocks, storage, rows: enc.rows, stats, table: shape.clone() })
}

/// Whether compressing the row group's text raw could beat its columnar
/// form (`columnar_bytes` as stored), judged cheaply: the text at zstd level
/// 1 costs a fraction of the real backend. Only when that is within 60% of
/// the columnar bytes does the row group pay for a full-strength raw trial:
/// text gains much more from the raw level (19) than typed columns from
/// theirs, and where raw won on the corpus (HDFS logs, Haiti) the ratio was
/// 1.0-1.1. flights.csv is at 1.8, so no trial runs there.
fn raw_might_win(text: &[u8], columnar_bytes: u64) -> bool {
    (backend::quick_size(text) as u64) * 10 < columnar_bytes * 16
}

/// The decode check: runs the reader's segment decoder on the unit's stored
/// bytes, each block checked against its CRC first.
fn decode_unit(encoded: &Encoded, seq: u64) -> Result<Vec<u8>, GateError> {
    let reject = |e: CodecError| GateError::Rejected(format!("unit {seq} ({}) does not decode: {e}", encoded.describe()));
    let mut out = Vec::new();
    match encoded {
        Encoded::Literal(bytes) => out.extend_from_slice(bytes),
        Encoded::Dictionary(_) | Encoded::ColumnDictionary(..) => {}
        Encoded::Frame { block, dict } => {
            let src = LocalSource { blocks: std::slice::from_ref(block), dict: dict.as_deref(), shared: &[] };
            decode_segment(&src, &SegmentKind::Frame(0), None, &mut out).map_err(reject)?;
        }
        Encoded::RowGroup { blocks, storage, rows, stats, table: shape } => {
            // The decoder needs the dialect and the row group's blocks; the
            // names and types of the columns do not matter to it.
            let table = Table {
                dialect: shape.dialect,
                columns: vec![ColumnDef { name: String::new(), logical_type: ValueType::Null }; stats.len()],
                row_groups: vec![RowGroupMeta { first_row: 0, row_count: *rows, storage: storage.clone(), stats: stats.clone() }],
            };
            let src = LocalSource { blocks, dict: None, shared: &shape.dictionaries };
            decode_segment(&src, &SegmentKind::RowGroup(0), Some(&table), &mut out).map_err(reject)?;
        }
    }
    Ok(out)
}

/// [`BlockSource`] over the blocks of one unit, by their index in the unit;
/// the dictionaries are the file's (their global ids are known to the unit).
struct LocalSource<'a> {
    blocks: &'a [EncodedBlock],
    dict: Option<&'a Dictionary>,
    shared: &'a [Option<Arc<SharedStrings>>],
}

impl BlockSource for LocalSource<'_> {
    fn payload(&self, id: u32) -> Result<Arc<Vec<u8>>, CodecError> {
        let block = self.blocks.get(id as usize).ok_or_else(|| CodecError::Malformed(format!("no block {id} in unit")))?;
        let verified = VerifiedBlock::check(id, &block.desc, &block.stored)?;
        let dict = match block.desc.dict {
            Some(d) => Some(self.dict.filter(|x| x.block_id == d).ok_or_else(|| CodecError::Malformed("unknown dictionary".into()))?.bytes.as_slice()),
            None => None,
        };
        Ok(Arc::new(backend::decompress(&verified, dict)?))
    }

    fn column_dictionary(&self, id: u32) -> Result<Arc<SharedStrings>, CodecError> {
        self.shared.iter().flatten().find(|d| d.block == id).cloned().ok_or_else(|| CodecError::Malformed(format!("unknown column dictionary {id}")))
    }
}

// ---------------------------------------------------------------- writer

/// What the writer accumulated: the footer's pieces and the decoded stream's
/// hash.
struct Written {
    blocks: Vec<BlockDesc>,
    segments: Vec<Segment>,
    row_groups: Vec<RowGroupMeta>,
    column_types: Vec<ValueType>,
    raw_row_groups: usize,
    decoded_sha: Vec<u8>,
    decoded_len: u64,
    offset: u64,
}

/// Receives verified units, writes them in sequence order, and hashes the
/// decoded stream.
fn write_units(file: &mut File, _cfg: &GateConfig, rx: &Receiver<Result<Verified, GateError>>, progress: &(dyn Fn(u64) + Sync)) -> Result<Written, GateError> {
    let mut out = BufWriter::with_capacity(1 << 20, &mut *file);
    out.write_all(&encode_header())?;
    let mut w = Written {
        blocks: Vec::new(),
        segments: Vec::new(),
        row_groups: Vec::new(),
        column_types: Vec::new(),
        raw_row_groups: 0,
        decoded_sha: Vec::new(),
        decoded_len: 0,
        offset: HEADER_LEN,
    };
    let mut sha = Sha256::new();
    let mut pending: BTreeMap<u64, Verified> = BTreeMap::new();
    let mut next = 0u64;
    for result in rx.iter() {
        let unit = result?;
        pending.insert(unit.seq, unit);
        while let Some(unit) = pending.remove(&next) {
            sha.update(&unit.decoded);
            w.decoded_len += unit.decoded.len() as u64;
            place_unit(&mut out, &mut w, unit)?;
            progress(w.decoded_len);
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(GateError::Rejected(format!("unit {next} never arrived")));
    }
    out.flush()?;
    w.decoded_sha = sha.finalize().to_vec();
    Ok(w)
}

/// Writes a unit's blocks, giving them object-wide ids, and records its
/// segment and row group.
fn place_unit(out: &mut impl Write, w: &mut Written, unit: Verified) -> Result<(), GateError> {
    let segment_offset = w.segments.last().map_or(0, |s| s.offset + s.len);
    let base = w.blocks.len() as u32;
    let mut put = |w: &mut Written, block: EncodedBlock| -> io::Result<()> {
        out.write_all(&block.stored)?;
        w.blocks.push(BlockDesc { offset: w.offset, ..block.desc });
        w.offset += block.stored.len() as u64;
        Ok(())
    };
    let crc = crc32c(&unit.decoded);
    let len = unit.decoded.len() as u64;
    match unit.encoded {
        Encoded::Literal(bytes) => w.segments.push(Segment { offset: segment_offset, len, crc32c: crc, kind: SegmentKind::Literal(bytes) }),
        Encoded::Dictionary(block) => {
            if base != 0 {
                return Err(GateError::Rejected("the dictionary must be the first block".into()));
            }
            put(w, block)?;
        }
        Encoded::ColumnDictionary(block, id) => {
            if base != id {
                return Err(GateError::Rejected(format!("column dictionary {id} would be block {base}")));
            }
            put(w, block)?;
        }
        Encoded::Frame { block, .. } => {
            put(w, block)?;
            w.segments.push(Segment { offset: segment_offset, len, crc32c: crc, kind: SegmentKind::Frame(base) });
        }
        Encoded::RowGroup { blocks, storage, rows, stats, .. } => {
            for b in blocks {
                put(w, b)?;
            }
            let storage = match storage {
                RowGroupStorage::Raw { block } => {
                    w.raw_row_groups += 1;
                    RowGroupStorage::Raw { block: base + block }
                }
                RowGroupStorage::Columnar { layout, columns } => {
                    RowGroupStorage::Columnar { layout: layout.map(|l| base + l), columns: columns.iter().map(|c| base + c).collect() }
                }
            };
            if w.column_types.is_empty() {
                w.column_types = vec![ValueType::Null; stats.len()];
            }
            for (t, s) in w.column_types.iter_mut().zip(&stats) {
                *t = t.join(s.storage_type);
            }
            let first_row = w.row_groups.last().map_or(0, |r| r.first_row + r.row_count);
            let rg = w.row_groups.len() as u32;
            w.row_groups.push(RowGroupMeta { first_row, row_count: rows, storage, stats });
            w.segments.push(Segment { offset: segment_offset, len, crc32c: crc, kind: SegmentKind::RowGroup(rg) });
        }
    }
    Ok(())
}

/// Writes footer and trailer, and makes the file durable.
fn finish_object(file: &mut File, cfg: &GateConfig, w: &mut Written, shape: Option<&TableShape>, sha: Vec<u8>) -> Result<CommitReport, GateError> {
    let table = shape.map(|s| Table {
        dialect: s.dialect,
        columns: s
            .column_names
            .iter()
            .enumerate()
            .map(|(i, name)| ColumnDef { name: name.clone(), logical_type: w.column_types.get(i).copied().unwrap_or(ValueType::Null) })
            .collect(),
        row_groups: std::mem::take(&mut w.row_groups),
    });
    let footer = Footer { settings: cfg.settings(), blocks: std::mem::take(&mut w.blocks), segments: std::mem::take(&mut w.segments), table };
    let (stored, raw_len, compression) = format::encode_footer(&footer);
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&sha);
    let trailer = Trailer {
        footer_offset: w.offset,
        footer_stored_len: stored.len() as u64,
        footer_raw_len: raw_len,
        footer_crc32c: crc32c(&stored),
        footer_compression: compression,
        original_len: w.decoded_len,
        original_sha256: sha256,
    };
    let mut out = BufWriter::new(&mut *file);
    out.write_all(&stored)?;
    out.write_all(&trailer.encode())?;
    out.flush()?;
    drop(out);
    Ok(CommitReport {
        original_len: w.decoded_len,
        stored_len: w.offset + stored.len() as u64 + format::TRAILER_LEN,
        sha256,
        blocks: footer.blocks.len(),
        segments: footer.segments.len(),
        row_groups: footer.table.as_ref().map_or(0, |t| t.row_groups.len()),
        raw_row_groups: w.raw_row_groups,
    })
}

/// Whether the frames of `first_chunk` (at least; a longer file has more)
/// save more with `dict` than the dictionary block costs, judged on a few
/// frames spread over the chunk at a middle level (a few milliseconds).
/// Incompressible data gains nothing, and its dictionary would be pure
/// overhead.
fn dictionary_pays_off(dict: &[u8], first_chunk: &[u8], frame_size: usize) -> bool {
    let frames: Vec<&[u8]> = first_chunk.chunks_exact(frame_size).collect();
    if frames.is_empty() {
        return false;
    }
    let probes: Vec<&[u8]> = [1, 2, 3].iter().map(|q| frames[frames.len() * q / 4]).collect();
    // Gain and cost at the same (probe) level; the dictionary block itself
    // is compressed once, at its own level, by an encode worker.
    let gain = backend::dictionary_gain(&probes, dict, DICTIONARY_PROBE_LEVEL);
    let cost = backend::zstd_size(dict, DICTIONARY_PROBE_LEVEL);
    gain > 0 && (gain as f64 / probes.len() as f64) * frames.len() as f64 > cost as f64
}

/// Test-only fault injection (feature `fault-injection`): input containing
/// [`fault_injection::MARKER`] is encoded wrongly on purpose, so tests can see
/// the gate reject it. Compiled to nothing otherwise.
pub mod fault_injection {
    use std::borrow::Cow;

    /// Bytes that make the encoder lie when the feature is on.
    pub const MARKER: &[u8] = b"AT1-FAULT-INJECTION";

    /// The payload to encode for `text`: with the feature on and the marker
    /// present, one byte differs.
    pub fn maybe_corrupt(text: &[u8]) -> Cow<'_, [u8]> {
        maybe_corrupt_within(text, text)
    }

    /// Like [`maybe_corrupt`], for a payload derived from `text`.
    pub fn maybe_corrupt_within<'a>(payload: &'a [u8], text: &[u8]) -> Cow<'a, [u8]> {
        if cfg!(feature = "fault-injection") && !payload.is_empty() && memchr::memmem::find(text, MARKER).is_some() {
            let mut bad = payload.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            return Cow::Owned(bad);
        }
        Cow::Borrowed(payload)
    }
}
