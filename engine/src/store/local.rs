//! The local filesystem backend: a folder is a container, files are blobs.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use filetime::FileTime;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

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

    fn temp_path(&self, path: &Path) -> PathBuf {
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let fixed = 1 + 1 + self.temp_tag.len() + TEMP_SUFFIX.len();
        let base = if base.len() + fixed <= names::MAX_COMPONENT {
            base.into_owned()
        } else {
            // Keep temp names within NAME_MAX: a short, unique stand-in.
            let digest = short_hash(base.as_bytes());
            format!("{}~{digest}", truncate(&base, 64))
        };
        path.with_file_name(format!(".{base}.{}{TEMP_SUFFIX}", self.temp_tag))
    }

    /// Copies one file from another local store with the kernel's
    /// copy_file_range, through a temp file and a rename so a crash never
    /// leaves a half-written file under the real name. The source is checked
    /// against its listing before and after, so a file that changes meanwhile
    /// fails (and is retried) instead of landing torn. Blocking.
    pub fn copy_file_from(&self, src: &LocalStore, meta: &BlobMeta) -> Result<u64, StoreError> {
        let from = src.path_for(&meta.name)?;
        let to = self.path_for(&meta.name)?;
        let src_err = |e| StoreError::io(format!("source {}", from.display()), e);
        let input = File::open(&from).map_err(src_err)?;
        let unchanged = |m: &fs::Metadata| m.len() == meta.size && modified(m) == meta.modified;
        let before = input.metadata().map_err(src_err)?;
        if !unchanged(&before) {
            return Err(StoreError::SourceChanged {
                name: meta.name.clone(),
            });
        }
        let tmp = self.temp_path(&to);
        let anonymous = self.create_anonymous(&to, before.mode())?;
        let out = match &anonymous {
            Some(f) => f
                .try_clone()
                .map_err(|e| StoreError::io(format!("destination {}", to.display()), e))?,
            None => self.create_temp(&tmp, before.mode())?,
        };
        let done = (|| {
            let n = copy_data(&input, &out, meta.size).map_err(|e| {
                let what = format!("copying {} to {}", from.display(), to.display());
                StoreError::io(what, e)
            })?;
            let dst_err = |e| StoreError::io(format!("destination {}", to.display()), e);
            // The mode given at creation is filtered by the umask: set it exactly.
            out.set_permissions(before.permissions()).map_err(dst_err)?;
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
        drop(out);
        match anonymous {
            Some(file) => done.and_then(|n| publish(&file, &tmp, &to).map(|_| n)),
            None => self.finish(done, &tmp, &to),
        }
    }

    /// An unnamed file (O_TMPFILE) in the blob's folder, creating folders as
    /// needed; `None` where the filesystem has no O_TMPFILE. Until it is
    /// linked in, a crash leaves nothing behind, and linking it costs one
    /// directory update instead of a create plus a rename.
    fn create_anonymous(&self, to: &Path, mode: u32) -> Result<Option<File>, StoreError> {
        let Some(dir) = to.parent() else {
            return Ok(None);
        };
        let err = |e| StoreError::io(format!("destination {}", to.display()), e);
        let open = || {
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(mode & 0o7777)
                .open(dir)
        };
        let res = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(err)?;
                open()
            }
            other => other,
        };
        match res {
            Ok(f) => Ok(Some(f)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Whether this store's blob `name` has the same bytes as `other`'s. Blocking.
    pub fn same_content(&self, other: &LocalStore, name: &str) -> Result<bool, StoreError> {
        let open = |s: &LocalStore| -> Result<File, StoreError> {
            let p = s.path_for(name)?;
            File::open(&p).map_err(|e| StoreError::io(p.display().to_string(), e))
        };
        let (mut a, mut b) = (open(self)?, open(other)?);
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

    fn create_temp(&self, tmp: &Path, mode: u32) -> Result<File, StoreError> {
        let err = |e| StoreError::io(format!("destination {}", tmp.display()), e);
        let create = || {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode & 0o7777)
                .open(tmp)
        };
        match create() {
            Ok(f) => Ok(f),
            // Create parents lazily: most files land in folders that exist.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = tmp.parent() {
                    fs::create_dir_all(parent).map_err(err)?;
                }
                create().map_err(err)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Renames the finished temp file into place, or removes it on failure.
    fn finish<T>(
        &self,
        done: Result<T, StoreError>,
        tmp: &Path,
        to: &Path,
    ) -> Result<T, StoreError> {
        let renamed = done.and_then(|v| {
            fs::rename(tmp, to)
                .map(|_| v)
                .map_err(|e| StoreError::io(format!("destination {}", to.display()), e))
        });
        if renamed.is_err() {
            let _ = fs::remove_file(tmp);
        }
        renamed
    }
}

/// Gives a finished O_TMPFILE file its name: linked straight in when the name
/// is free, else linked under the temp name and renamed over the old file
/// (atomic replace).
fn publish(file: &File, tmp: &Path, to: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let cstr =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let link = |target: &Path| -> io::Result<()> {
        let proc = cstr(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
        let target = cstr(target)?;
        // SAFETY: both strings are valid NUL-terminated paths for the call.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc.as_ptr(),
                libc::AT_FDCWD,
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
    let err = |e| StoreError::io(format!("destination {}", to.display()), e);
    match link(to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A temp file left by a killed attempt of this job: replace it.
            let _ = fs::remove_file(tmp);
            link(tmp).map_err(err)?;
            fs::rename(tmp, to).map_err(|e| {
                let _ = fs::remove_file(tmp);
                err(e)
            })
        }
        Err(e) => Err(err(e)),
    }
}

/// Copies `size` bytes in the kernel (copy_file_range), falling back to a
/// read/write copy where the filesystems do not support it. Returns the bytes
/// copied, fewer than `size` if the source shrank.
fn copy_data(input: &File, out: &File, size: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut copied = 0u64;
    while copied < size {
        let want = (size - copied).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call and
        // null offsets make the kernel use (and advance) the file positions.
        let n = unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                std::ptr::null_mut(),
                out.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
            );
            if copied == 0 && unsupported {
                return io::copy(&mut io::Read::take(input, size), &mut &*out);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    Ok(copied)
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
    use md5::{Digest, Md5};
    hex::encode(&Md5::digest(data)[..8])
}

fn modified(m: &fs::Metadata) -> DateTime<Utc> {
    let ft = FileTime::from_last_modification_time(m);
    DateTime::from_timestamp(ft.unix_seconds(), ft.nanoseconds()).unwrap_or_default()
}

fn to_filetime(t: DateTime<Utc>) -> FileTime {
    FileTime::from_unix_time(t.timestamp(), t.timestamp_subsec_nanos())
}

fn meta_of(name: String, m: &fs::Metadata) -> BlobMeta {
    let modified = modified(m);
    let etag = format!(
        "{:x}-{:x}",
        modified.timestamp_nanos_opt().unwrap_or_default(),
        m.len()
    );
    BlobMeta {
        name,
        size: m.len(),
        modified,
        etag,
        md5: None,
        props: None,
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Listing {
        let (tx, rx) = mpsc::channel(LIST_BUFFER);
        let root = self.root.clone();
        let spawned = std::thread::Builder::new()
            .name("ferry-list".into())
            .spawn(move || walk(&root, &tx));
        if let Err(e) = spawned {
            return futures::stream::once(async move { Err(StoreError::io("listing thread", e)) })
                .boxed();
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }

    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        let path = self.path_for(name)?;
        let name = name.to_string();
        let res = tokio::task::spawn_blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(name, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path.display().to_string(), e)),
        })
        .await;
        res.map_err(|e| StoreError::io(self.describe(), io::Error::other(e)))?
    }

    async fn read(&self, meta: &BlobMeta) -> Result<ByteStream, StoreError> {
        let path = self.path_for(&meta.name)?;
        let what = format!("source {}", path.display());
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| StoreError::io(what.clone(), e))?;
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map(move |r| r.map_err(|e| StoreError::io(what.clone(), e)))
                .boxed(),
        )
    }

    async fn write(&self, meta: &BlobMeta, mut data: ByteStream) -> Result<(), StoreError> {
        let to = self.path_for(&meta.name)?;
        let tmp = self.temp_path(&to);
        let dst_err = |e| StoreError::io(format!("destination {}", tmp.display()), e);
        let file = {
            let this = self.clone();
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || this.create_temp(&tmp, 0o666))
                .await
                .map_err(|e| dst_err(io::Error::other(e)))??
        };
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
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.finish(written, &tmp, &to))
            .await
            .map_err(|e| StoreError::io(meta.name.clone(), io::Error::other(e)))?
    }

    fn as_local(&self) -> Option<&LocalStore> {
        Some(self)
    }
}

/// One directory entry awaiting its turn in the walk.
struct Entry {
    /// File name, with a trailing `/` for directories so that sorting the
    /// keys of one directory yields full names in byte order.
    key: String,
    dir: bool,
}

/// Walks `root` depth-first in byte order of full names, sending each item.
/// Memory is the sorted entries of the directories on the current path, not
/// the whole tree.
fn walk(root: &Path, tx: &mpsc::Sender<Result<Listed, StoreError>>) {
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
        let item = match fs::metadata(&path) {
            Ok(m) if m.is_file() => Listed::Blob(meta_of(name, &m)),
            Ok(_) => Listed::Skipped {
                name,
                reason: SkipReason::NotRegularFile,
            },
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
        let dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let key = if dir { format!("{s}/") } else { s.to_string() };
        out.push(Entry { key, dir });
    }
    out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Some(out)
}
