//! Sets of byte ranges `(start, end)`, kept sorted and merged: the free
//! space of a source's filesystems, the ranges a change source says
//! changed.

/// Byte ranges `(start, end)`, sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// From any ranges: sorted, empty ones dropped, overlaps merged.
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Ranges {
        ranges.retain(|&(a, b)| a < b);
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Ranges(out)
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&(a, b)| b - a).sum()
    }

    /// Whether `[start, end)` lies wholly inside these ranges.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, b)| b <= start);
        self.0.get(i).is_some_and(|&(a, b)| a <= start && end <= b)
    }

    /// `[0, len)` without these ranges.
    pub fn complement(&self, len: u64) -> Ranges {
        let mut out = Vec::new();
        let mut at = 0;
        for &(a, b) in &self.0 {
            if a.min(len) > at {
                out.push((at, a.min(len)));
            }
            at = at.max(b);
        }
        if len > at {
            out.push((at, len));
        }
        Ranges(out)
    }

    /// These ranges without any byte of `other`.
    pub fn without(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.0 {
            while j < other.0.len() && other.0[j].1 <= a {
                j += 1;
            }
            let mut at = a;
            let mut k = j;
            while k < other.0.len() && other.0[k].0 < b {
                let (c, d) = other.0[k];
                if c > at {
                    out.push((at, c));
                }
                at = at.max(d);
                k += 1;
            }
            if at < b {
                out.push((at, b));
            }
        }
        Ranges(out)
    }

    pub(super) fn shifted(&self, by: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(move |&(a, b)| (a + by, b + by))
    }

    /// Where the last range ends.
    pub fn end(&self) -> Option<u64> {
        self.0.last().map(|&(_, b)| b)
    }

    /// Whether any byte of `[start, end)` is in these ranges.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.0.partition_point(|&(_, b)| b <= start);
        self.0.get(i).is_some_and(|&(a, _)| a < end)
    }

    /// The ranges within `[start, end)`, widened to whole `page`s (a
    /// power of two) and clipped to it.
    pub fn pages_within(&self, start: u64, end: u64, page: u64) -> Vec<(u64, u64)> {
        let i = self.0.partition_point(|&(_, b)| b <= start);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(a, b) in self.0[i..].iter().take_while(|&&(a, _)| a < end) {
            let a = (a & !(page - 1)).max(start);
            let b = b.saturating_add(page - 1) & !(page - 1);
            let b = b.min(end);
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;

    #[test]
    fn ranges_merge_cover_and_complement() {
        let r = Ranges::new(vec![(10, 20), (0, 5), (15, 30), (40, 40)]);
        assert_eq!(r.0, [(0, 5), (10, 30)]);
        assert_eq!(r.total(), 25);
        assert!(r.covers(10, 30) && r.covers(0, 5) && !r.covers(4, 11) && !r.covers(30, 31));
        assert_eq!(r.complement(50).0, [(5, 10), (30, 50)]);
        assert_eq!(r.complement(3).0, Vec::<(u64, u64)>::new());
        let cut = Ranges::new(vec![(2, 3), (12, 14), (25, 35)]);
        assert_eq!(r.without(&cut).0, [(0, 2), (3, 5), (10, 12), (14, 25)]);
    }

    #[test]
    fn ranges_merge_and_answer_overlaps() {
        let r = Ranges::new(vec![(50, 60), (0, 10), (10, 20), (55, 70), (5, 5)]);
        assert_eq!(r.as_slice(), &[(0, 20), (50, 70)]);
        assert!(r.overlaps(19, 30));
        assert!(!r.overlaps(20, 50));
        assert!(r.overlaps(40, 51));
        assert!(!r.overlaps(70, 100));
        assert_eq!(r.total(), 40);
    }

    #[test]
    fn pages_within_widen_to_pages_and_clip_to_the_chunk() {
        let r = Ranges::new(vec![(10, 20), (4000, 4100), (9000, 20000)]);
        assert_eq!(r.pages_within(0, 8192, 4096), vec![(0, 8192)]);
        assert_eq!(r.pages_within(8192, 16384, 4096), vec![(8192, 16384)]);
        assert_eq!(r.pages_within(16384, 32768, 4096), vec![(16384, 20480)]);
        assert_eq!(r.pages_within(20480, 32768, 4096), vec![]);
    }
}
