//! The local filesystem backend: a folder is a container, files are blobs.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use filetime::FileTime;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::file_data::copy_data;
use super::{names, BlobMeta, BlobStore, ByteStream, Listed, Listing, StoreError};
use crate::event::SkipReason;

/// Suffix of in-progress files; listings never show them.
const TEMP_SUFFIX: &str = ".ferry-tmp";
/// Listing items buffered ahead of the consumer.
const LIST_BUFFER: usize = 256;

/// A folder on this machine.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: Arc<PathBuf>,
    /// Names this store's temporary files, so a replay of the same job reuses
    /// (and so cleans up) a temp file a killed attempt left behind, while two
    /// jobs never write the same temp file.
    temp_tag: Arc<str>,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_temp_tag(root, "000000000000")
    }

    pub fn with_temp_tag(root: impl Into<PathBuf>, tag: &str) -> Self {
        LocalStore {
            root: Arc::new(root.into()),
            temp_tag: tag.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file path of a blob, after checking the name cannot escape the root.
    pub fn path_for(&self, name: &str) -> Result<PathBuf, StoreError> {
        names::check(name)?;
        Ok(self.root.join(name))
    }

    /// A file's metadata as it is now, blocking (`head` off the runtime);
    /// `None` if it is not a readable regular file.
    pub fn stat(&self, name: &str) -> Option<BlobMeta> {
        file_meta(&self.path_for(name).ok()?, name.to_string())
            .ok()
            .flatten()
    }

    /// The temp file name for a blob whose file name is `base`, in the same folder.
    fn temp_name(&self, base: &str) -> CString {
        let fixed = 1 + 1 + self.temp_tag.len() + TEMP_SUFFIX.len();
        let base = if base.len() + fixed <= names::MAX_COMPONENT {
            base.to_string()
        } else {
            // Keep temp names within NAME_MAX: a short, unique stand-in.
            let digest = short_hash(base.as_bytes());
            format!("{}~{digest}", truncate(base, 64))
        };
        // A checked name has no NUL, nor does the tag.
        CString::new(format!(".{base}.{}{TEMP_SUFFIX}", self.temp_tag)).unwrap_or_default()
    }

    /// Opens the folder a blob goes in by walking down from the root one
    /// component at a time, creating missing folders and never following a
    /// symbolic link below the root (`O_NOFOLLOW` on each step, so a link
    /// swapped in meanwhile is refused too); refuses a link at the blob's
    /// own name as well. Everything after works relative to this folder, so
    /// nothing is ever written outside the root.
    fn open_parent(&self, name: &str, to: &Path) -> Result<Parent, StoreError> {
        self.walk_to_parent(name, to, true, &mut FolderCache::default(), None)
    }

    /// The folder of an existing blob, walked the same way but creating
    /// nothing.
    fn open_existing_parent(&self, name: &str, to: &Path) -> Result<Parent, StoreError> {
        self.walk_to_parent(name, to, false, &mut FolderCache::default(), None)
    }

    fn walk_to_parent(
        &self,
        name: &str,
        to: &Path,
        create: bool,
        folders: &mut FolderCache,
        like: Option<&Path>,
    ) -> Result<Parent, StoreError> {
        names::check(name)?;
        let (dirs, base) = name.rsplit_once('/').unwrap_or(("", name));
        let base = cstring(base.as_bytes()).map_err(|e| StoreError::io(name, e))?;
        let dir = match &folders.last {
            Some((cached, dir)) if cached == dirs => dir.clone(),
            _ => {
                let dir = Arc::new(self.walk_to_folder(name, dirs, create, like)?);
                folders.last = Some((dirs.to_string(), dir.clone()));
                dir
            }
        };
        if is_link(dir.as_raw_fd(), &base) {
            return Err(link_refused(to));
        }
        Ok(Parent {
            dir,
            base,
            to: to.to_path_buf(),
        })
    }

    /// Opens the folder `dirs` (of blob `name`) below the root, one part at
    /// a time without following links, creating missing parts if `create`.
    /// A folder it creates takes the permissions of the same folder under
    /// `like` (a local source), so a private folder stays private; the owner
    /// keeps full access, or the copy could not fill it.
    fn walk_to_folder(
        &self,
        name: &str,
        dirs: &str,
        create: bool,
        like: Option<&Path>,
    ) -> Result<OwnedFd, StoreError> {
        let root_err = |e| StoreError::io(format!("destination {}", self.root.display()), e);
        // The root itself is the user's choice and may be a link.
        let root = cstring(self.root.as_os_str().as_bytes()).map_err(root_err)?;
        let mut dir = match open_dir(libc::AT_FDCWD, &root, false) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(self.root.as_path()).map_err(root_err)?;
                open_dir(libc::AT_FDCWD, &root, false)
            }
            other => other,
        }
        .map_err(root_err)?;
        let mut walked = self.root.to_path_buf();
        let mut rel = PathBuf::new();
        for part in dirs.split('/').filter(|p| !p.is_empty()) {
            walked.push(part);
            rel.push(part);
            let c = cstring(part.as_bytes()).map_err(|e| StoreError::io(name, e))?;
            let opened = match open_dir(dir.as_raw_fd(), &c, true) {
                Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                    // SAFETY: a valid directory descriptor and NUL-terminated name.
                    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) };
                    let made = if rc == 0 {
                        if let Some(m) = like.and_then(|l| fs::metadata(l.join(&rel)).ok()) {
                            let mode = (m.mode() & 0o7777) | 0o700;
                            // SAFETY: as above. A failure leaves the default
                            // mode: the copy itself is not at stake.
                            unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) };
                        }
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    };
                    match made {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                        _ => open_dir(dir.as_raw_fd(), &c, true),
                    }
                }
                other => other,
            };
            dir = opened.map_err(|e| refused(dir.as_raw_fd(), &c, &walked, e))?;
        }
        Ok(dir)
    }

    /// Copies one file from another local store with the kernel's
    /// copy_file_range, through a temp file and a rename so a crash never
    /// leaves a half-written file under the real name. The source is checked
    /// against its listing before and after, so a file that changes meanwhile
    /// fails (and is retried) instead of landing torn. Blocking.
    pub fn copy_file_from(&self, src: &LocalStore, meta: &BlobMeta) -> Result<u64, StoreError> {
        self.copy_file_via(src, meta, &mut FolderCache::default())
    }

    /// [`LocalStore::copy_file_from`] reusing the destination folder opened
    /// for the previous blob when this one goes in the same folder.
    pub fn copy_file_via(
        &self,
        src: &LocalStore,
        meta: &BlobMeta,
        folders: &mut FolderCache,
    ) -> Result<u64, StoreError> {
        let from = src.path_for(&meta.name)?;
        let to = self.path_for(&meta.name)?;
        let src_err = |e| StoreError::io(format!("source {}", from.display()), e);
        let (input, before) = open_source(&from).map_err(src_err)?;
        let unchanged = |m: &fs::Metadata| m.len() == meta.size && modified(m) == meta.modified;
        if !unchanged(&before) {
            return Err(StoreError::SourceChanged {
                name: meta.name.clone(),
            });
        }
        let parent = self.walk_to_parent(&meta.name, &to, true, folders, Some(&src.root))?;
        let tmp = self.temp_name(&base_name(&meta.name));
        // An unnamed file where the filesystem has them, else a named temp.
        let (out, anonymous) = match parent.create_anonymous(before.mode())? {
            Some(f) => (f, true),
            None => (parent.create_temp(&tmp, before.mode())?, false),
        };
        let done = (|| {
            let n = copy_data(&input, &before, &out, meta.size).map_err(|e| {
                let what = format!("copying {} to {}", from.display(), to.display());
                StoreError::io(what, e)
            })?;
            let dst_err = |e| StoreError::io(format!("destination {}", to.display()), e);
            // The mode given at creation is filtered by the umask: set it
            // exactly, unless the umask spares every bit of it.
            if umask().is_none_or(|m| before.mode() & 0o7777 & m != 0) {
                out.set_permissions(before.permissions()).map_err(dst_err)?;
            }
            filetime::set_file_handle_times(&out, None, Some(to_filetime(meta.modified)))
                .map_err(dst_err)?;
            let after = input.metadata().map_err(src_err)?;
            if n != meta.size || !unchanged(&after) {
                return Err(StoreError::SourceChanged {
                    name: meta.name.clone(),
                });
            }
            Ok(n)
        })();
        if anonymous {
            done.and_then(|n| parent.publish(&out, &tmp).map(|_| n))
        } else {
            drop(out);
            parent.finish(done, &tmp)
        }
    }

    /// Sets the permission bits of this store's blob `name`, without
    /// following links (as writes do). Blocking.
    pub fn set_mode(&self, name: &str, mode: u32) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let to = self.path_for(name)?;
        let err = |e| StoreError::io(format!("destination {}", to.display()), e);
        let parent = self.open_existing_parent(name, &to)?;
        let file = parent.open_blob().map_err(err)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)
    }

    /// Whether this store's blob `name` has the same bytes as `other`'s. Blocking.
    pub fn same_content(&self, other: &LocalStore, name: &str) -> Result<bool, StoreError> {
        // This store is the destination: its file is read without following
        // links (the source's file links are followed, as its listing does).
        let mut a = {
            let to = self.path_for(name)?;
            let parent = self.open_existing_parent(name, &to)?;
            parent
                .open_blob()
                .map_err(|e| StoreError::io(to.display().to_string(), e))?
        };
        let mut b = {
            let p = other.path_for(name)?;
            open_source(&p)
                .map_err(|e| StoreError::io(p.display().to_string(), e))?
                .0
        };
        let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        let err = |e| StoreError::io(name.to_string(), e);
        loop {
            let na = read_full(&mut a, &mut ba).map_err(err)?;
            let nb = read_full(&mut b, &mut bb).map_err(err)?;
            if ba[..na] != bb[..nb] {
                return Ok(false);
            }
            if na == 0 {
                return Ok(true);
            }
        }
    }
}

/// The process's umask, read once from /proc (asking the kernel with
/// umask(2) means setting it, racing other threads creating files).
/// `None` where /proc does not say: modes are then always set.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// The last destination folder a copy thread opened. Consecutive blobs of
/// a work batch mostly share a folder, and walking to it costs ~4 system
/// calls of a small file's ~17. Workers start a new cache per work batch,
/// so a folder moved away meanwhile is reopened within one batch's time.
#[derive(Default)]
pub struct FolderCache {
    last: Option<(String, Arc<OwnedFd>)>,
}

/// The folder a blob goes in, opened below the root without following links.
struct Parent {
    dir: Arc<OwnedFd>,
    /// The blob's file name in `dir`.
    base: CString,
    /// The blob's full path, for messages only.
    to: PathBuf,
}

impl Parent {
    fn err(&self) -> impl Fn(io::Error) -> StoreError + '_ {
        |e| StoreError::io(format!("destination {}", self.to.display()), e)
    }

    /// An unnamed file (O_TMPFILE) in the folder; `None` where the
    /// filesystem has no O_TMPFILE. Until it is linked in, a crash leaves
    /// nothing behind, and linking it costs one directory update instead of
    /// a create plus a rename.
    fn create_anonymous(&self, mode: u32) -> Result<Option<File>, StoreError> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c".".as_ptr(),
                libc::O_WRONLY | libc::O_TMPFILE | libc::O_CLOEXEC,
                (mode & 0o7777) as libc::c_uint,
            )
        };
        match owned(fd) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err()(e)),
        }
    }

    /// A new temp file named `tmp` in the folder. A file already there (left
    /// by a killed attempt of this job, or a link someone put there) is
    /// removed first, and the new one is created exclusively and without
    /// following links, so nothing is ever written through that name.
    fn create_temp(&self, tmp: &CStr, mode: u32) -> Result<File, StoreError> {
        unlink(self.dir.as_raw_fd(), tmp);
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                tmp.as_ptr(),
                // Readable too: a ranged download reads its file back to
                // check the blob's MD5 (`Positioned::hash`).
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                (mode & 0o7777) as libc::c_uint,
            )
        };
        owned(fd).map(File::from).map_err(self.err())
    }

    /// Opens the existing blob for reading, refusing a link.
    fn open_blob(&self) -> io::Result<File> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                self.base.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        owned(fd).map(File::from)
    }

    /// Renames the finished temp file into place, or removes it on failure.
    /// A rename replaces the name itself: it never follows a link there.
    fn finish<T>(&self, done: Result<T, StoreError>, tmp: &CStr) -> Result<T, StoreError> {
        let renamed = done.and_then(|v| self.rename(tmp).map(|_| v));
        if renamed.is_err() {
            unlink(self.dir.as_raw_fd(), tmp);
        }
        renamed
    }

    fn rename(&self, tmp: &CStr) -> Result<(), StoreError> {
        let d = self.dir.as_raw_fd();
        // SAFETY: valid directory descriptors and NUL-terminated names.
        let rc = unsafe { libc::renameat(d, tmp.as_ptr(), d, self.base.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(self.err()(io::Error::last_os_error()))
        }
    }

    /// Gives a finished O_TMPFILE file its name: linked straight in when the
    /// name is free, else linked under the temp name and renamed over the
    /// old file (atomic replace).
    fn publish(&self, file: &File, tmp: &CStr) -> Result<(), StoreError> {
        let link = |target: &CStr| -> io::Result<()> {
            let proc = cstring(format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes())?;
            // SAFETY: valid descriptors and NUL-terminated paths for the call.
            let rc = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    self.dir.as_raw_fd(),
                    target.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match link(&self.base) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A temp file left by a killed attempt of this job: replace it.
                unlink(self.dir.as_raw_fd(), tmp);
                link(tmp).map_err(self.err())?;
                self.rename(tmp)
                    .inspect_err(|_| unlink(self.dir.as_raw_fd(), tmp))
            }
            Err(e) => Err(self.err()(e)),
        }
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens a folder relative to `at`; with `no_follow`, a link there fails
/// (ELOOP) instead of being followed.
fn open_dir(at: RawFd, name: &CStr, no_follow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `at` is AT_FDCWD or a valid directory descriptor; `name` is
    // NUL-terminated.
    owned(unsafe { libc::openat(at, name.as_ptr(), flags) })
}

/// Whether `name` in the folder `dir` is a symbolic link.
fn is_link(dir: RawFd, name: &CStr) -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, writable stat buffer.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

fn unlink(dir: RawFd, name: &CStr) {
    // SAFETY: valid descriptor and NUL-terminated name; failure is ignored
    // (the file may not exist).
    unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
}

/// The error for a blob whose path goes through, or ends at, a link.
fn link_refused(path: &Path) -> StoreError {
    StoreError::Conflict {
        what: format!("destination {}", path.display()),
        why: "is a symbolic link; ferry never writes through links in a destination \
              (remove the link, or copy into the folder it points to)"
            .into(),
    }
}

/// Maps a failure to open folder `name` while walking down to a blob: a
/// link gets its own message; the rest as any I/O error on that folder.
fn refused(dir: RawFd, name: &CStr, walked: &Path, e: io::Error) -> StoreError {
    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) && is_link(dir, name) {
        link_refused(walked)
    } else {
        StoreError::io(format!("destination {}", walked.display()), e)
    }
}

fn base_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    use io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `.NAME.TAG.ferry-tmp` with a 12-hex-digit job tag: a temp file of ours.
fn is_temp_name(s: &str) -> bool {
    let Some(stem) = s.strip_suffix(TEMP_SUFFIX) else {
        return false;
    };
    let Some((head, tag)) = stem.rsplit_once('.') else {
        return false;
    };
    s.starts_with('.')
        && head.len() > 1
        && tag.len() == 12
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn short_hash(data: &[u8]) -> String {
    hex::encode(&md5_simd::digest(data)[..8])
}

fn modified(m: &fs::Metadata) -> DateTime<Utc> {
    let ft = FileTime::from_last_modification_time(m);
    DateTime::from_timestamp(ft.unix_seconds(), ft.nanoseconds()).unwrap_or_default()
}

fn to_filetime(t: DateTime<Utc>) -> FileTime {
    FileTime::from_unix_time(t.timestamp(), t.timestamp_subsec_nanos())
}

/// The blob at `path`: `None` if absent or not a regular file.
fn file_meta(path: &Path, name: String) -> Result<Option<BlobMeta>, StoreError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(meta_of(name, &m))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path.display().to_string(), e)),
    }
}

/// Opens a source file for reading, refusing what is not a regular file.
/// Why not `File::open`: a name listed as a file may be a FIFO by the time
/// it is copied, and opening a FIFO waits for a writer, forever: the copy
/// never reached a blob boundary and SIGTERM could not stop the job.
/// `O_NONBLOCK` makes that open return at once, and regular files ignore
/// it (open(2): reads and copies of them block as without it), so it is
/// left set: clearing it cost two system calls per file. Returns the
/// file's metadata too (the copy needs it; no second `fstat`).
fn open_source(path: &Path) -> io::Result<(File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is no longer a regular file (a FIFO, socket or device took its name since it was listed); not copied",
        ));
    }
    Ok((file, meta))
}

fn meta_of(name: String, m: &fs::Metadata) -> BlobMeta {
    let modified = modified(m);
    BlobMeta {
        name,
        size: m.len(),
        modified,
        etag: etag_of(m),
        md5: None,
        props: None,
        mode: Some(m.mode() & 0o7777),
    }
}

/// A file's version: its size, mtime, inode and change time, as 16 hex
/// digits (FNV-1a of them). Why more than size and mtime: an upload resumes
/// on the blocks staged for the same etag, and two files of one size and
/// mtime (a tool that sets mtimes: tar `--mtime`, reproducible builds, `cp
/// -p` of another version) shared it, so a new job committed blocks of
/// both. The inode tells such files apart, and the change time moves with
/// every write, even one whose mtime is put back. Why a hash: the etag is in
/// every blob event and history line, and the six fields as text made a
/// 1M-blob log a third larger (251 -> 333 MB) and reading it back 15 MiB
/// heavier; 16 digits are shorter than the old mtime-size text. A fixed
/// function, so a log's etags still match after an upgrade.
fn etag_of(m: &fs::Metadata) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for field in [
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.len(),
        m.ino(),
        m.ctime() as u64,
        m.ctime_nsec() as u64,
    ] {
        for b in field.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

impl LocalStore {
    fn walk_listing(&self, links: Links) -> Listing {
        let (tx, rx) = mpsc::channel(LIST_BUFFER);
        let root = self.root.clone();
        let spawned = std::thread::Builder::new()
            .name("ferry-list".into())
            .spawn(move || walk(&root, &tx, links));
        if let Err(e) = spawned {
            return futures::stream::once(async move { Err(StoreError::io("listing thread", e)) })
                .boxed();
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }
}

/// What a listing makes of a symbolic link to a file.
#[derive(Clone, Copy)]
enum Links {
    /// A source: the file it points to is the blob.
    Follow,
    /// A destination: the link is no blob to judge (an existing target
    /// would be mistaken for this blob's copy), but a conflict.
    Refuse,
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Listing {
        self.walk_listing(Links::Follow)
    }

    fn list_existing(&self) -> Listing {
        self.walk_listing(Links::Refuse)
    }

    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        let path = self.path_for(name)?;
        let name = name.to_string();
        let res = tokio::task::spawn_blocking(move || file_meta(&path, name)).await;
        res.map_err(|e| StoreError::io(self.describe(), io::Error::other(e)))?
    }

    async fn read(&self, meta: &BlobMeta) -> Result<ByteStream, StoreError> {
        let path = self.path_for(&meta.name)?;
        let what = format!("source {}", path.display());
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_source(&path)).await
        };
        let file = opened
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map(|(file, _)| tokio::fs::File::from_std(file))
            .map_err(|e| StoreError::io(what.clone(), e))?;
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map(move |r| r.map_err(|e| StoreError::io(what.clone(), e)))
                .boxed(),
        )
    }

    async fn write(&self, meta: &BlobMeta, mut data: ByteStream) -> Result<(), StoreError> {
        let (to, tmp, parent, file) = self.open_temp(meta).await?;
        let dst_err = |e| StoreError::io(format!("destination {}", to.display()), e);
        let mut file = tokio::fs::File::from_std(file);
        let written: Result<(), StoreError> = async {
            while let Some(chunk) = data.next().await {
                file.write_all(&chunk?).await.map_err(dst_err)?;
            }
            file.flush().await.map_err(dst_err)?;
            let std = file.into_std().await;
            filetime::set_file_handle_times(&std, None, Some(to_filetime(meta.modified)))
                .map_err(dst_err)
        }
        .await;
        tokio::task::spawn_blocking(move || parent.finish(written, &tmp))
            .await
            .map_err(|e| StoreError::io(meta.name.clone(), io::Error::other(e)))?
    }

    fn as_local(&self) -> Option<&LocalStore> {
        Some(self)
    }
}

impl LocalStore {
    /// The blob's folder and a fresh temp file in it (on the blocking pool).
    async fn open_temp(
        &self,
        meta: &BlobMeta,
    ) -> Result<(PathBuf, CString, Parent, File), StoreError> {
        let to = self.path_for(&meta.name)?;
        let tmp = self.temp_name(&base_name(&meta.name));
        let this = self.clone();
        let (name, to2, tmp2) = (meta.name.clone(), to.clone(), tmp.clone());
        let (parent, file) = tokio::task::spawn_blocking(move || {
            let parent = this.open_parent(&name, &to2)?;
            let file = parent.create_temp(&tmp2, 0o666)?;
            Ok::<_, StoreError>((parent, file))
        })
        .await
        .map_err(|e| {
            StoreError::io(format!("destination {}", to.display()), io::Error::other(e))
        })??;
        Ok((to, tmp, parent, file))
    }

    /// Writes a blob whose bytes arrive out of order: `fill` writes every
    /// byte of it at its offset through the [`Positioned`] it is given
    /// (several ranges at once); the file is named only once `fill` has
    /// succeeded, so a failed or interrupted fill leaves nothing behind.
    pub async fn write_positioned<F, Fut>(&self, meta: &BlobMeta, fill: F) -> Result<(), StoreError>
    where
        F: FnOnce(Positioned) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let (to, tmp, parent, file) = self.open_temp(meta).await?;
        let file = Arc::new(file);
        let target = Positioned {
            file: file.clone(),
            to: to.clone().into(),
        };
        let dst_err = |e| StoreError::io(format!("destination {}", to.display()), e);
        let written = match fill(target).await {
            Ok(()) => {
                filetime::set_file_handle_times(&file, None, Some(to_filetime(meta.modified)))
                    .map_err(dst_err)
            }
            Err(e) => Err(e),
        };
        tokio::task::spawn_blocking(move || parent.finish(written, &tmp))
            .await
            .map_err(|e| StoreError::io(meta.name.clone(), io::Error::other(e)))?
    }
}

/// A destination file filled at offsets, shared by the tasks filling it.
#[derive(Clone)]
pub struct Positioned {
    file: Arc<File>,
    /// The blob's path, for messages.
    to: Arc<Path>,
}

impl Positioned {
    /// Writes `data` at offset `at` (on the blocking pool); returns the
    /// offset just past it, and the buffer for reuse.
    pub async fn write_at(&self, data: Vec<u8>, at: u64) -> Result<(u64, Vec<u8>), StoreError> {
        use std::os::unix::fs::FileExt;
        let end = at + data.len() as u64;
        let data = self
            .blocking(move |file| file.write_all_at(&data, at).map(|()| data))
            .await?;
        Ok((end, data))
    }

    /// Feeds the bytes of `range`, already written, to `md5` (on the
    /// blocking pool, through `buf`); returns both for the next range.
    pub async fn hash(
        &self,
        mut md5: md5_simd::Md5,
        mut buf: Vec<u8>,
        range: std::ops::Range<u64>,
    ) -> Result<(md5_simd::Md5, Vec<u8>), StoreError> {
        use std::os::unix::fs::FileExt;
        self.blocking(move |file| {
            buf.resize(HASH_CHUNK, 0);
            let mut at = range.start;
            while at < range.end {
                let n = HASH_CHUNK.min((range.end - at) as usize);
                file.read_exact_at(&mut buf[..n], at)?;
                md5.update(&buf[..n]);
                at += n as u64;
            }
            Ok((md5, buf))
        })
        .await
    }

    /// Runs `f` on the file on the blocking pool; its error names the
    /// destination.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| StoreError::io(format!("destination {}", self.to.display()), e))
    }
}

/// Bytes read back per call while hashing a downloaded file: it is still in
/// the page cache, so this only bounds the buffer.
const HASH_CHUNK: usize = 1 << 20;

/// One directory entry awaiting its turn in the walk.
struct Entry {
    /// File name, with a trailing `/` for directories so that sorting the
    /// keys of one directory yields full names in the listing order
    /// (`names::cmp`).
    key: String,
    dir: bool,
    link: bool,
}

/// Walks `root` depth-first in the listing order of full names
/// (`names::cmp`), sending each item.
/// Memory is the sorted entries of the directories on the current path, not
/// the whole tree.
fn walk(root: &Path, tx: &mpsc::Sender<Result<Listed, StoreError>>, links: Links) {
    let send = |item| tx.blocking_send(item).is_ok();
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            send(Err(StoreError::Conflict {
                what: root.display().to_string(),
                why: "not a folder".into(),
            }));
            return;
        }
        Err(e) => {
            send(Err(StoreError::io(format!("folder {}", root.display()), e)));
            return;
        }
    }
    if let Err(e) = fs::read_dir(root) {
        send(Err(StoreError::io(format!("folder {}", root.display()), e)));
        return;
    }
    let mut stack: Vec<(String, std::vec::IntoIter<Entry>)> = Vec::new();
    match read_sorted(root, "", &send) {
        Some(entries) => stack.push((String::new(), entries.into_iter())),
        None => return,
    }
    while let Some((prefix, entries)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let name = format!("{prefix}{}", entry.key);
        let path = root.join(&name);
        if entry.dir {
            if let Some(children) = read_sorted(&path, &name, &send) {
                stack.push((name, children.into_iter()));
            }
            continue;
        }
        if entry.link && matches!(links, Links::Refuse) {
            let error = link_refused(&path);
            if !send(Ok(Listed::Failed { name, error })) {
                return;
            }
            continue;
        }
        let item = match fs::metadata(&path) {
            Ok(m) if m.is_file() => Listed::Blob(meta_of(name, &m)),
            Ok(_) => Listed::Skipped {
                name,
                reason: SkipReason::NotRegularFile,
            },
            // A link to nothing (or to itself) has no content to copy: it
            // failed on every run, so a nightly job never ended clean.
            Err(e)
                if entry.link
                    && (e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ELOOP)) =>
            {
                Listed::Skipped {
                    name,
                    reason: SkipReason::NotRegularFile,
                }
            }
            Err(e) => {
                let error = StoreError::io(path.display().to_string(), e);
                Listed::Failed { name, error }
            }
        };
        if !send(Ok(item)) {
            return;
        }
    }
}

/// Reads one directory and sorts it; failures of single entries are sent as
/// `Failed` items. `None` if the directory itself cannot be read.
fn read_sorted(
    dir: &Path,
    prefix: &str,
    send: &impl Fn(Result<Listed, StoreError>) -> bool,
) -> Option<Vec<Entry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            let name = prefix.to_string();
            send(Ok(Listed::Failed {
                name,
                error: StoreError::io(dir.display().to_string(), e),
            }));
            return None;
        }
    };
    let mut out = Vec::new();
    for e in rd {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                let error = StoreError::io(dir.display().to_string(), err);
                send(Ok(Listed::Failed {
                    name: prefix.to_string(),
                    error,
                }));
                continue;
            }
        };
        let file_name = e.file_name();
        let Some(s) = file_name.to_str() else {
            let name = format!("{prefix}{}", file_name.to_string_lossy());
            let error = StoreError::InvalidName {
                name: name.clone(),
                why: "not valid UTF-8; rename the file".into(),
            };
            send(Ok(Listed::Failed { name, error }));
            continue;
        };
        if is_temp_name(s) {
            // Not copied, but recorded: a user's file that happens to look
            // like ours is audited rather than silently left out.
            let name = format!("{prefix}{s}");
            send(Ok(Listed::Skipped {
                name,
                reason: SkipReason::FerryTempFile,
            }));
            continue;
        }
        // file_type comes from the directory entry: no stat for directories.
        let (dir, link) = e
            .file_type()
            .map_or((false, false), |t| (t.is_dir(), t.is_symlink()));
        let key = if dir { format!("{s}/") } else { s.to_string() };
        out.push(Entry { key, dir, link });
    }
    out.sort_unstable_by(|a, b| names::cmp(&a.key, &b.key));
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    #[test]
    fn a_fifo_where_a_file_was_listed_fails_at_once_instead_of_waiting() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("z");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_source(&fifo).unwrap_err();
        assert!(
            err.to_string().contains("no longer a regular file"),
            "{err}"
        );
        fs::write(d.path().join("f"), b"data").unwrap();
        let (mut f, _) = open_source(&d.path().join("f")).unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "data");
    }

    #[test]
    fn files_of_one_size_and_mtime_have_their_own_etags_and_a_write_changes_one() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"first version").unwrap();
        fs::write(&b, b"other content").unwrap();
        let when = FileTime::from_unix_time(1_577_836_800, 0);
        for p in [&a, &b] {
            filetime::set_file_mtime(p, when).unwrap();
        }
        let etag = |p: &Path| etag_of(&fs::metadata(p).unwrap());
        assert_ne!(etag(&a), etag(&b), "same size and mtime, other files");
        // Rewritten, its mtime put back: still another version.
        let before = etag(&a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&a, b"third version").unwrap();
        filetime::set_file_mtime(&a, when).unwrap();
        assert_ne!(etag(&a), before);
        // Times past 2262 still tell versions apart (the filesystem may
        // clamp them, ext4 to 2446).
        let far = |p: &Path, s: i64| {
            filetime::set_file_mtime(p, FileTime::from_unix_time(s, 0)).unwrap();
            etag(p)
        };
        assert_ne!(far(&b, 9_999_999_999), far(&b, 10_000_000_000));
        assert_eq!(etag(&b).len(), 16);
    }

    /// A source store with `names` and a destination whose `dirlink` and
    /// `filelink` point into `outside/`.
    fn setup(names: &[&str]) -> (tempfile::TempDir, LocalStore, LocalStore, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (src, dst, outside) = (
            d.path().join("src"),
            d.path().join("dst"),
            d.path().join("out"),
        );
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"precious").unwrap();
        fs::create_dir_all(dst.join("real")).unwrap();
        symlink(&outside, dst.join("dirlink")).unwrap();
        symlink(outside.join("victim"), dst.join("filelink")).unwrap();
        for n in names {
            let p = src.join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, n.as_bytes()).unwrap();
        }
        let tag = "0123456789ab";
        let (s, t) = (
            LocalStore::with_temp_tag(&src, tag),
            LocalStore::with_temp_tag(&dst, tag),
        );
        (d, s, t, outside)
    }

    fn listed_meta(store: &LocalStore, name: &str) -> BlobMeta {
        let m = fs::metadata(store.root().join(name)).unwrap();
        meta_of(name.to_string(), &m)
    }

    fn outside_untouched(outside: &Path) {
        let names: Vec<_> = fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["victim"], "something was written outside");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
    }

    #[test]
    fn copies_never_go_through_a_link_in_the_destination() {
        let names = [
            "dirlink/x",
            "dirlink/new/y",
            "filelink",
            "real/ok",
            "fresh/dir/ok",
        ];
        let (_d, src, dst, outside) = setup(&names);
        for name in names {
            let res = dst.copy_file_from(&src, &listed_meta(&src, name));
            if name.contains("link") {
                let err = res.expect_err(name);
                assert!(matches!(err, StoreError::Conflict { .. }), "{name}: {err}");
                assert!(err.to_string().contains("symbolic link"), "{err}");
            } else {
                res.unwrap();
                assert_eq!(fs::read(dst.root().join(name)).unwrap(), name.as_bytes());
            }
        }
        outside_untouched(&outside);
        assert!(fs::symlink_metadata(dst.root().join("filelink"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Reading the destination for a comparison does not follow links either.
        let err = dst.same_content(&src, "filelink").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_reused_folder_still_lands_every_blob_where_it_belongs_and_refuses_links() {
        let names = ["real/a", "real/b", "fresh/c", "real/d", "e", "real/planted"];
        let (_d, src, dst, outside) = setup(&names);
        let mut folders = FolderCache::default();
        for name in &names[..5] {
            dst.copy_file_via(&src, &listed_meta(&src, name), &mut folders)
                .unwrap();
            assert_eq!(fs::read(dst.root().join(name)).unwrap(), name.as_bytes());
        }
        // A link planted in the cached folder is still seen per blob.
        symlink(outside.join("victim"), dst.root().join("real/planted")).unwrap();
        let err = dst
            .copy_file_via(&src, &listed_meta(&src, "real/planted"), &mut folders)
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        outside_untouched(&outside);
    }

    #[test]
    fn copies_keep_the_source_mode_whatever_the_umask_spares() {
        let names = ["m/private", "m/script", "m/shared"];
        let (_d, src, dst, _outside) = setup(&names);
        for (name, mode) in names.iter().zip([0o600, 0o755, 0o666]) {
            fs::set_permissions(src.root().join(name), fs::Permissions::from_mode(mode)).unwrap();
            dst.copy_file_from(&src, &listed_meta(&src, name)).unwrap();
            let got = fs::metadata(dst.root().join(name)).unwrap().mode() & 0o7777;
            assert_eq!(got, mode, "{name}");
        }
    }

    #[tokio::test]
    async fn streamed_writes_never_go_through_a_link_nor_a_planted_temp_link() {
        let (_d, _src, dst, outside) = setup(&[]);
        let write = |name: &str| {
            let meta = BlobMeta {
                name: name.into(),
                size: 3,
                modified: Utc::now(),
                etag: String::new(),
                md5: None,
                props: None,
                mode: None,
            };
            let data = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"new")) });
            let dst = dst.clone();
            async move { dst.write(&meta, data.boxed()).await }
        };
        for name in ["dirlink/x", "dirlink/new/y", "filelink"] {
            let err = write(name).await.expect_err(name);
            assert!(err.to_string().contains("symbolic link"), "{name}: {err}");
        }
        // A link where the temp file goes (its name is predictable).
        symlink(
            outside.join("victim"),
            dst.root().join("real/.planted.0123456789ab.ferry-tmp"),
        )
        .unwrap();
        write("real/planted").await.unwrap();
        assert_eq!(fs::read(dst.root().join("real/planted")).unwrap(), b"new");
        assert!(!dst
            .root()
            .join("real/.planted.0123456789ab.ferry-tmp")
            .exists());
        outside_untouched(&outside);
    }
}
