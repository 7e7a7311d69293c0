//! The order `ferry history` prints lines in (newest first), in bounded
//! memory however many lines match.
//!
//! With `--limit N` a min-heap keeps the N newest. Without one every line is
//! printed, and a folder of a million blobs has millions of lines (holding
//! them all took 361 MB at 1M): they are gathered encoded in runs of
//! [`RUN_LINES`], and once a second run starts each full run is sorted and
//! written to an unnamed temp file (gone when closed, even after a crash);
//! the lines are then read back through a k-way merge. Why not the `extsort` crate: its
//! build script compiles a README test generator (skeptic) into every build
//! and it brings rayon, for what is a heap over buffered readers here.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use chrono::{DateTime, Utc};

use crate::error::EngineError;
use crate::job::JobId;
use crate::projection::history::HistoryEntry;
use crate::projection::{HistoryLine, Side};

/// Lines held in memory before a run is spilled: each is held encoded as
/// it is spilled (~170 bytes with its key, about half of a `HistoryLine`),
/// so a run is ~6 MB.
const RUN_LINES: usize = 32_768;
/// Spilled runs merged at once; more are first merged into one run, so a
/// huge history never holds more than this many files open.
const MAX_RUNS: usize = 256;

/// Orders history lines: by time, not by job id (an old job replayed today
/// is news), then job, seq and side.
type LineKey = (DateTime<Utc>, JobId, u64, u8);

fn key(l: &HistoryLine) -> LineKey {
    (l.entry.at, l.job, l.seq, l.side as u8)
}

/// A line ordered by its key.
struct Keyed(LineKey, HistoryLine);

impl Keyed {
    fn new(line: HistoryLine) -> Keyed {
        Keyed(key(&line), line)
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Keyed {}
impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// The newest lines offered so far: all of them, or at most a limit.
pub(crate) struct Newest {
    limit: Option<usize>,
    /// With a limit: a min-heap of the kept ones, so an offer older than
    /// all of a full heap is not even built.
    kept: BinaryHeap<Reverse<Keyed>>,
    /// Without one: the run being gathered, encoded ...
    run: Vec<(LineKey, Vec<u8>)>,
    /// ... and the runs written so far, each newest first.
    spilled: Vec<File>,
    count: u64,
}

impl Newest {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Newest {
            limit,
            kept: BinaryHeap::new(),
            run: Vec::new(),
            spilled: Vec::new(),
            count: 0,
        }
    }

    /// Offers the line `line()` builds, whose key is `key`.
    pub(crate) fn offer(
        &mut self,
        key: LineKey,
        line: impl FnOnce() -> HistoryLine,
    ) -> Result<(), EngineError> {
        match self.limit {
            Some(0) => {}
            Some(n) if self.kept.len() >= n => {
                if self
                    .kept
                    .peek()
                    .is_some_and(|Reverse(oldest)| key > oldest.0)
                {
                    self.kept.pop();
                    self.kept.push(Reverse(Keyed(key, line())));
                }
            }
            Some(_) => self.kept.push(Reverse(Keyed(key, line()))),
            None => {
                self.count += 1;
                let bytes = encode(&line()).map_err(spill_error)?;
                self.run.push((key, bytes));
                if self.run.len() >= RUN_LINES {
                    self.spill().map_err(spill_error)?;
                }
            }
        }
        Ok(())
    }

    /// Sorts the gathered run newest first and writes it to a temp file.
    fn spill(&mut self) -> io::Result<()> {
        if self.spilled.len() >= MAX_RUNS {
            let runs = std::mem::take(&mut self.spilled);
            let merged = write_run(Merge::new(runs)?.map(|line| encode(&line?)))?;
            self.spilled.push(merged);
        }
        self.run.sort_unstable_by_key(|l| Reverse(l.0));
        let run = write_run(self.run.drain(..).map(|(_, bytes)| Ok(bytes)))?;
        self.spilled.push(run);
        Ok(())
    }

    /// Every kept line, newest first.
    pub(crate) fn into_lines(mut self) -> Result<HistoryLines, EngineError> {
        if self.limit.is_some() {
            // Ascending order of Reverse is newest first.
            let lines: Vec<HistoryLine> = self
                .kept
                .into_sorted_vec()
                .into_iter()
                .map(|Reverse(Keyed(_, line))| line)
                .collect();
            return Ok(HistoryLines {
                len: lines.len() as u64,
                lines: Lines::Held(lines.into_iter()),
            });
        }
        if self.spilled.is_empty() {
            self.run.sort_unstable_by_key(|l| Reverse(l.0));
            return Ok(HistoryLines {
                len: self.run.len() as u64,
                lines: Lines::Encoded(self.run.into_iter()),
            });
        }
        if !self.run.is_empty() {
            self.spill().map_err(spill_error)?;
        }
        Ok(HistoryLines {
            len: self.count,
            lines: Lines::Merged(Merge::new(self.spilled).map_err(spill_error)?),
        })
    }
}

/// `ferry history`'s lines, newest first, read as they are printed.
pub struct HistoryLines {
    len: u64,
    lines: Lines,
}

enum Lines {
    Held(std::vec::IntoIter<HistoryLine>),
    Encoded(std::vec::IntoIter<(LineKey, Vec<u8>)>),
    Merged(Merge),
}

impl HistoryLines {
    /// How many lines there are (read or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every line at once.
    #[cfg(test)]
    pub(crate) fn all(self) -> Vec<HistoryLine> {
        self.map(|l| l.expect("history line")).collect()
    }
}

impl Iterator for HistoryLines {
    type Item = Result<HistoryLine, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.lines {
            Lines::Held(lines) => lines.next().map(Ok),
            Lines::Encoded(lines) => lines
                .next()
                .map(|(_, bytes)| decode(&bytes).map_err(spill_error)),
            Lines::Merged(merge) => merge.next().map(|r| r.map_err(spill_error)),
        }
    }
}

/// Reads runs (each newest first) back as one sequence, newest first.
struct Merge {
    runs: Vec<BufReader<File>>,
    /// The next line of each run that has one, with the run's index.
    heads: BinaryHeap<(Keyed, usize)>,
}

impl Merge {
    fn new(files: Vec<File>) -> io::Result<Merge> {
        let mut runs = Vec::with_capacity(files.len());
        let mut heads = BinaryHeap::with_capacity(files.len());
        for mut f in files {
            f.rewind()?;
            let mut r = BufReader::new(f);
            if let Some(line) = read_line(&mut r)? {
                heads.push((Keyed::new(line), runs.len()));
            }
            runs.push(r);
        }
        Ok(Merge { runs, heads })
    }
}

impl Iterator for Merge {
    type Item = io::Result<HistoryLine>;

    fn next(&mut self) -> Option<Self::Item> {
        let (Keyed(_, line), i) = self.heads.pop()?;
        match read_line(&mut self.runs[i]) {
            Ok(Some(next)) => self.heads.push((Keyed::new(next), i)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(line))
    }
}

/// Writes encoded lines (already in order) to a new unnamed temp file.
fn write_run(lines: impl Iterator<Item = io::Result<Vec<u8>>>) -> io::Result<File> {
    let mut w = BufWriter::new(tempfile::tempfile()?);
    for bytes in lines {
        write_bytes(&mut w, &bytes?)?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// A line as it is held and spilled: (address, side, job, seq, entry) with
/// the entry in the history index's compact form.
fn encode(l: &HistoryLine) -> io::Result<Vec<u8>> {
    let entry = l.entry.encode().map_err(io::Error::other)?;
    rmp_serde::to_vec(&(&l.address, l.side as u8, l.job, l.seq, &entry)).map_err(io::Error::other)
}

fn decode(bytes: &[u8]) -> io::Result<HistoryLine> {
    let (address, side, job, seq, entry): (String, u8, JobId, u64, Vec<u8>) =
        rmp_serde::from_slice(bytes).map_err(io::Error::other)?;
    Ok(HistoryLine {
        address,
        side: if side == Side::Source as u8 {
            Side::Source
        } else {
            Side::Destination
        },
        job,
        seq,
        entry: HistoryEntry::decode(&entry).map_err(io::Error::other)?,
    })
}

/// In a run file each line is its length, then its bytes.
fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

/// The next line of a run, or `None` at its end.
fn read_line(r: &mut impl Read) -> io::Result<Option<HistoryLine>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

fn spill_error(cause: io::Error) -> EngineError {
    EngineError::TempSpace {
        dir: std::env::temp_dir(),
        cause,
    }
}

#[cfg(test)]
#[path = "newest_tests.rs"]
mod tests;
