//! `at1 verify STORE`: is the store what its journal and its metadata say?
//!
//! - the journal's hash chain is recomputed from genesis: a changed,
//!   removed or reordered event is reported where it is;
//! - every object a file's content names must exist, decode block by block
//!   to bytes whose SHA-256 is the one recorded, at the recorded stored
//!   length; each failure is reported with the file's path.

use std::sync::Arc;

use at1_core::reader;
use at1_store::{Content, Extent, Ino};

use crate::error::VResult;
use crate::journal::{self, ChainProblem};
use crate::volume::{hex, path_in, Volume};

/// A file whose content does not check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentProblem {
    pub ino: Ino,
    pub path: String,
    pub object: String,
    pub what: String,
}

impl std::fmt::Display for ContentProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: object {}: {}", self.path, self.object, self.what)
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub events: u64,
    pub chain: Vec<ChainProblem>,
    pub contents: u64,
    pub damaged: Vec<ContentProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.chain.is_empty() && self.damaged.is_empty()
    }
}

/// Why content `c` does not check, if it does not.
fn content_problem(v: &Volume, c: &Content) -> Option<String> {
    let object = match v.contents.get(&c.object) {
        Ok(o) => o,
        Err(reader::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
        Err(e) => return Some(e.to_string()),
    };
    if object.stored_len() != c.stored_len {
        return Some(format!("{} bytes stored where {} were recorded", object.stored_len(), c.stored_len));
    }
    if object.trailer().original_sha256 != c.sha256 {
        return Some(format!("holds content with SHA-256 {} where {} was recorded", hex(&object.trailer().original_sha256), hex(&c.sha256)));
    }
    match reader::verify(Arc::clone(&object)) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// Whether an extent's object holds as many bytes as the extent.
fn original_len_problem(v: &Volume, e: &Extent) -> Option<String> {
    let object = v.contents.get(&e.content.object).ok()?;
    (object.original_len() != e.len).then(|| format!("holds {} bytes where its extent at {} has {}", object.original_len(), e.start, e.len))
}

/// Checks the journal chain and every file's content (each extent).
pub fn verify(v: &Volume, mut progress: impl FnMut(&ContentProblem)) -> VResult<VerifyReport> {
    let mut report = VerifyReport::default();
    {
        let r = v.meta.read()?;
        let (events, chain) = journal::verify_chain(&*r)?;
        report.events = events;
        report.chain = chain;
    }
    let mut after = 0;
    loop {
        let page = v.meta.read()?.contents(after, 1024)?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (ino, extents) in page {
            let mut end = 0;
            for e in extents {
                report.contents += 1;
                let problem = if e.start != end {
                    Some(format!("its extent at {} does not follow the one before (ending at {end})", e.start))
                } else if let Some(what) = content_problem(v, &e.content) {
                    Some(what)
                } else {
                    original_len_problem(v, &e)
                };
                end = e.end();
                if let Some(what) = problem {
                    let path = v.meta.read().map(|r| path_in(&*r, ino)).unwrap_or_else(|_| format!("<inode {ino}>"));
                    let p = ContentProblem { ino, path, object: e.content.object.hex(), what };
                    progress(&p);
                    report.damaged.push(p);
                }
            }
        }
    }
    Ok(report)
}
