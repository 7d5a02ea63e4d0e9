//! A volume in a temp store, for tests that drive the engine in-process
//! (queries, the reference model) rather than through a mount.

use std::path::Path;
use std::sync::Arc;

use at1::gate::GateConfig;
use at1::query::VolumeSource;
use at1::volume::access::Caller;
use at1::volume::{Owner, Volume, VolumeConfig};

pub struct TestVolume {
    pub volume: Arc<Volume>,
    pub dir: tempfile::TempDir,
}

pub const ROOT_OWNER: Owner = Owner { uid: 0, gid: 0 };

impl TestVolume {
    pub fn new() -> TestVolume {
        let dir = tempfile::tempdir().expect("temp dir");
        let volume = Volume::open(dir.path(), VolumeConfig::default()).expect("a new store opens");
        TestVolume { volume, dir }
    }

    /// Makes the directories of `path` that are missing.
    fn make_parents(&self, path: &str) {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut dir = 1;
        for name in parts.iter().take(parts.len().saturating_sub(1)) {
            dir = match self.volume.lookup(dir, name.as_bytes()) {
                Ok(a) => a.ino,
                Err(_) => self.volume.mkdir(dir, name.as_bytes(), 0o755, ROOT_OWNER).expect("mkdir").ino,
            };
        }
    }

    /// Compresses `data` with `cfg` and imports it as the file `path`.
    pub fn add(&self, path: &str, data: &[u8], cfg: &GateConfig) {
        let object = tempfile::NamedTempFile::new().expect("temp file");
        at1::gate::compress_to_path(data, object.path(), cfg, &|_| {}).expect("the gate accepts the input");
        self.import(path, object.path());
    }

    /// Imports the object file `object` as the file `path`.
    pub fn import(&self, path: &str, object: &Path) {
        self.make_parents(path);
        self.volume.import(object, path, 0o644, ROOT_OWNER).expect("import");
    }

    /// Queries as root.
    pub fn source(&self) -> VolumeSource {
        VolumeSource { volume: self.volume.clone(), caller: Caller::root() }
    }
}

impl Drop for TestVolume {
    fn drop(&mut self) {
        let _ = self.volume.close();
    }
}
