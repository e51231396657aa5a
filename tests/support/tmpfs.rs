//! A real, small tmpfs for disk-full tests (root only), unmounted on drop whatever happens.

use std::path::Path;
use std::process::Command;

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (for example `size=4m` or `size=16m,nr_inodes=64`);
    /// `None` when that is not possible here (not root, no `mount`).
    pub fn mount(options: &str) -> Option<Self> {
        if !super::is_root() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes and free inodes.
    pub fn free(&self) -> (u64, u64) {
        let st = nix::sys::statvfs::statvfs(self.path()).expect("statvfs");
        (
            st.blocks_available() * st.fragment_size(),
            st.files_available(),
        )
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
