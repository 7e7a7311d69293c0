//! Where an attempt's runs lie, as the log writer knows it: the gaps a new
//! run may fill without overlapping another (readers rely on an attempt's
//! runs being disjoint: the only run that can hold a name is the first whose
//! greatest name is at or after it).
//!
//! Why gaps and not just "above the greatest name so far": copies finish
//! out of name order. With 16 workers on 10,000 small local files, 60% of
//! the outcomes arrived below the greatest name already in a run and each
//! cost two sled keys of their own, which made them most of the writer's
//! CPU. Those late outcomes mostly fall in the gaps between runs of the same
//! few writer batches, so they become runs too.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Most spans remembered per attempt; past it the lowest is given up (its
/// gap below goes too). Workers move up through the names, so a gap far
/// behind the newest runs is rarely filled, and memory stays flat.
const SPANS_MAX: usize = 256;

/// The taken ranges of one attempt's names.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Every name at or below it is taken: runs written before this writer
    /// knew the attempt (read from the log), and spans given up.
    floor: Option<String>,
    /// Runs this writer wrote above `floor`: greatest name -> least name.
    taken: BTreeMap<String, String>,
}

/// Where a run starting at a name may go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gap {
    /// The name lies in a taken range: its outcome needs keys of its own.
    Taken,
    /// A run may start here and hold names below the bound (the next run's
    /// least name), or any greater name when there is none.
    Free(Option<String>),
}

impl Spans {
    pub(crate) fn above(floor: Option<String>) -> Self {
        Spans {
            floor,
            taken: BTreeMap::new(),
        }
    }

    pub(crate) fn gap(&self, name: &str) -> Gap {
        if self.floor.as_deref().is_some_and(|f| name <= f) {
            return Gap::Taken;
        }
        let next = self
            .taken
            .range::<str, _>((Bound::Included(name), Bound::Unbounded))
            .next();
        match next {
            Some((_, least)) if least.as_str() <= name => Gap::Taken,
            Some((_, least)) => Gap::Free(Some(least.clone())),
            None => Gap::Free(None),
        }
    }

    /// Records a run from `least` to `greatest`, which [`Spans::gap`] said
    /// was free.
    pub(crate) fn take(&mut self, least: String, greatest: String) {
        self.taken.insert(greatest, least);
        while self.taken.len() > SPANS_MAX {
            if let Some((greatest, _)) = self.taken.pop_first() {
                self.floor = Some(greatest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(bound: Option<&str>) -> Gap {
        Gap::Free(bound.map(str::to_string))
    }

    #[test]
    fn given_runs_when_asked_then_names_inside_are_taken_and_gaps_are_bounded_by_the_next_run() {
        let mut s = Spans::above(Some("c".into()));
        s.take("f".into(), "h".into());
        s.take("m".into(), "p".into());
        assert_eq!(s.gap("a"), Gap::Taken, "at or below the floor");
        assert_eq!(s.gap("c"), Gap::Taken);
        assert_eq!(s.gap("d"), free(Some("f")));
        assert_eq!(s.gap("f"), Gap::Taken);
        assert_eq!(s.gap("g"), Gap::Taken);
        assert_eq!(s.gap("h"), Gap::Taken);
        assert_eq!(s.gap("i"), free(Some("m")));
        assert_eq!(s.gap("p"), Gap::Taken);
        assert_eq!(s.gap("q"), free(None));
    }

    #[test]
    fn given_more_spans_than_kept_when_taken_then_the_lowest_become_the_floor() {
        let mut s = Spans::above(None);
        for i in 0..SPANS_MAX + 2 {
            s.take(format!("{i:04}a"), format!("{i:04}b"));
        }
        assert_eq!(s.taken.len(), SPANS_MAX);
        assert_eq!(s.floor.as_deref(), Some("0001b"));
        assert_eq!(s.gap("0000c"), Gap::Taken, "a gap given up");
        assert_eq!(s.gap("0001c"), free(Some("0002a")));
    }
}
