//! Moving a file's bytes between two open files in the kernel
//! (copy_file_range), keeping a sparse source's holes.
//!
//! Why holes: a VM image or database file of 100 GiB may hold 2 GiB of
//! data. Copied byte for byte it took its full size at the destination
//! (a 1 GiB file with 4 KiB of data became 1.1 GB), where `cp` keeps it
//! sparse. A file whose allocated blocks cover its size (nearly every file)
//! takes the plain path and costs no extra system call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Copies `size` bytes of `input` to `out` (both at offset 0; `out`
/// empty), holes kept where the source has them. Returns the bytes copied,
/// fewer than `size` if the source shrank (a sparse copy always covers
/// `size`; the caller's check of the source after the copy catches a change).
/// `meta`: the source's, as the caller read it (no second `fstat`).
pub(super) fn copy_data(
    input: &File,
    meta: &std::fs::Metadata,
    out: &File,
    size: u64,
) -> io::Result<u64> {
    if is_sparse(meta) {
        if let Some(n) = copy_sparse(input, out, size)? {
            return Ok(n);
        }
    }
    copy_dense(input, out, size)
}

/// Fewer blocks allocated than the size needs.
fn is_sparse(m: &std::fs::Metadata) -> bool {
    m.blocks().saturating_mul(512) < m.size()
}

/// The whole file from the current positions, copy_file_range or, where
/// the filesystems do not support it, read and write.
fn copy_dense(input: &File, out: &File, size: u64) -> io::Result<u64> {
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
            if copied == 0 && unsupported(&e) {
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

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
    )
}

/// The data ranges only (`SEEK_DATA`/`SEEK_HOLE`), then the size set, so
/// the holes stay holes. `None` where the filesystem cannot say where its
/// data is (then nothing was written).
fn copy_sparse(input: &File, out: &File, size: u64) -> io::Result<Option<u64>> {
    let fd = input.as_raw_fd();
    let end = i64::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut pos = 0i64;
    while pos < end {
        // SAFETY: a plain lseek on a descriptor open for the whole call.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // No data from `pos` to the end: the rest is a hole.
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL | libc::EOPNOTSUPP) if pos == 0 => return Ok(None),
                _ => return Err(e),
            }
        }
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let stop = hole.min(end);
        copy_range(input, out, data as u64, (stop - data) as u64)?;
        pos = stop;
    }
    // A hole at the end is the size alone.
    out.set_len(size)?;
    Ok(Some(size))
}

/// `len` bytes at `at` in both files.
fn copy_range(input: &File, out: &File, at: u64, len: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (at as i64, at as i64);
    let mut left = len;
    while left > 0 {
        let want = left.min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are ours and the
        // kernel advances them, leaving the file positions alone.
        let n = unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if unsupported(&e) {
                return copy_range_by_hand(input, out, off_in as u64, left);
            }
            return Err(e);
        }
        if n == 0 {
            // The source shrank: the check after the copy says so.
            return Ok(());
        }
        left -= n as u64;
    }
    Ok(())
}

fn copy_range_by_hand(input: &File, out: &File, mut at: u64, mut left: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match input.read_at(&mut buf[..want], at) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all_at(&buf[..n], at)?;
        at += n as u64;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn allocated(f: &File) -> u64 {
        f.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn a_sparse_file_is_copied_with_its_holes_and_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let size: u64 = 64 << 20;
        {
            let mut f = File::create(&src).unwrap();
            f.set_len(size).unwrap();
            // Data at the start, in the middle, and a hole at the end.
            f.write_all(b"head").unwrap();
            f.seek(SeekFrom::Start(20 << 20)).unwrap();
            f.write_all(&[7u8; 100_000]).unwrap();
        }
        let input = File::open(&src).unwrap();
        let out = File::create(&dst).unwrap();
        let meta = input.metadata().unwrap();
        assert_eq!(copy_data(&input, &meta, &out, size).unwrap(), size);
        drop(out);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        File::open(&src).unwrap().read_to_end(&mut a).unwrap();
        File::open(&dst).unwrap().read_to_end(&mut b).unwrap();
        assert!(a == b, "the copy differs");
        if allocated(&input) < 1 << 20 {
            // The filesystem keeps holes (ext4, tmpfs, xfs, btrfs do).
            let used = allocated(&File::open(&dst).unwrap());
            assert!(used < 1 << 20, "{used} bytes allocated for 64 MiB of holes");
        }
    }

    #[test]
    fn a_dense_file_and_an_empty_one_are_copied_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [("dense", vec![3u8; 300_000]), ("empty", Vec::new())] {
            let src = dir.path().join(name);
            std::fs::write(&src, &data).unwrap();
            let dst = dir.path().join(format!("{name}.copy"));
            let input = File::open(&src).unwrap();
            let out = File::create(&dst).unwrap();
            let meta = input.metadata().unwrap();
            assert_eq!(
                copy_data(&input, &meta, &out, data.len() as u64).unwrap(),
                data.len() as u64
            );
            assert_eq!(std::fs::read(&dst).unwrap(), data, "{name}");
        }
    }
}
