//! The memory budget: how many bytes one op may allocate (outputs, scratch, inputs read from
//! files), checked with exact arithmetic *before* anything is allocated, so a tiny input that
//! asks for terabytes gets a clear error instead of an abort or a swapping machine.
//!
//! The default is half the physical memory; `SPARKLE_MEMORY_BUDGET=SIZE` (bytes, or with a
//! `K`/`M`/`G`/`T` suffix, powers of 1024) overrides it, and so does the CLI's `--memory-budget`.

use std::fmt;

/// The share of physical memory one op may use by default.
pub const DEFAULT_FRACTION: f64 = 0.5;
/// The budget when physical memory cannot be read (non-Linux without a value).
pub const FALLBACK_BYTES: u64 = 4 << 30;

/// A number of bytes an op may allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget(u64);

/// An allocation that would exceed the budget, or whose size overflows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// What was to be allocated ("the output", "packing scratch", a file name...).
    pub what: String,
    /// Bytes it needs (`None`: more than 2^64).
    pub needed: Option<u64>,
    /// The budget in force.
    pub budget: u64,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.needed {
            Some(n) => write!(f, "{} needs {}", self.what, human(n))?,
            None => write!(f, "{} needs more than 2^64 bytes", self.what)?,
        }
        write!(
            f,
            ", over the memory budget of {} (raise it with --memory-budget or SPARKLE_MEMORY_BUDGET)",
            human(self.budget)
        )
    }
}

impl std::error::Error for OverBudget {}

/// `1536` -> `1.5 KiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Parses `4096`, `512K`, `1.5G`, `2T` (suffixes are powers of 1024, case-insensitive, an
/// optional trailing `B` or `iB` allowed).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let t = if lower.ends_with("ib") && t.len() > 2 {
        &t[..t.len() - 2]
    } else if lower.ends_with('b') {
        &t[..t.len() - 1]
    } else {
        t
    };
    let (num, shift) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let num = num.trim();
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift);
    }
    let x = num.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0)?;
    let bytes = x * (1u64 << shift) as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Physical memory in bytes (Linux: `MemTotal` of /proc/meminfo).
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl MemoryBudget {
    /// Exactly `bytes`.
    pub const fn bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// No limit (`u64::MAX`): allocations still fail cleanly, never abort.
    pub const UNLIMITED: Self = Self(u64::MAX);

    /// `SPARKLE_MEMORY_BUDGET` if set (an unparsable value is an error), else
    /// [`DEFAULT_FRACTION`] of physical memory.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("SPARKLE_MEMORY_BUDGET") {
            Ok(v) if !v.trim().is_empty() => parse_size(&v)
                .map(Self)
                .ok_or_else(|| format!("SPARKLE_MEMORY_BUDGET={v:?} is not a size such as 512M or 8G")),
            _ => Ok(Self::default_for_this_machine()),
        }
    }

    /// [`DEFAULT_FRACTION`] of physical memory ([`FALLBACK_BYTES`] where unknown).
    pub fn default_for_this_machine() -> Self {
        Self(physical_memory().map_or(FALLBACK_BYTES, |m| (m as f64 * DEFAULT_FRACTION) as u64))
    }

    /// The budget in bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether `count` elements of `elem` bytes each (checked: an overflow is over any budget)
    /// fit; `what` names it in the error.
    pub fn check(self, what: &str, count: usize, elem: usize) -> Result<u64, OverBudget> {
        let needed = (count as u64).checked_mul(elem as u64);
        match needed {
            Some(n) if n <= self.0 => Ok(n),
            _ => Err(OverBudget { what: what.to_string(), needed, budget: self.0 }),
        }
    }

    /// The budget left after `used` bytes.
    pub fn after(self, used: u64) -> Self {
        Self(self.0.saturating_sub(used))
    }

    /// `len` zeros in a new vector, if they fit the budget and the allocator has them: never an
    /// abort. The memory is zeroed lazily by the OS (calloc), as `vec![0.0; len]` is: a large
    /// scratch buffer costs only the pages that are touched (a memset of 50 MB per call made a
    /// stream's CPU worker 100x slower).
    pub fn zeros<T: ZeroBits>(self, what: &str, len: usize) -> Result<Vec<T>, OverBudget> {
        let needed = self.check(what, len, std::mem::size_of::<T>())?;
        try_zeroed(len).ok_or_else(|| OverBudget {
            what: format!("{what} (allocation failed)"),
            needed: Some(needed),
            budget: self.0,
        })
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// An element type whose all-zero bytes are a valid value (0): the ones [`MemoryBudget::zeros`]
/// allocates.
pub trait ZeroBits: Copy + sealed::Sealed {}
impl ZeroBits for f32 {}
impl ZeroBits for i32 {}
impl ZeroBits for u32 {}
impl ZeroBits for u8 {}
impl ZeroBits for i8 {}

/// `vec![0; len]` that reports an allocation failure instead of aborting.
#[allow(unsafe_code)]
fn try_zeroed<T: ZeroBits>(len: usize) -> Option<Vec<T>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).ok()?;
    // SAFETY: the layout has a non-zero size (len > 0, and every ZeroBits type has a size).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` comes from the global allocator with the layout of `len` Ts, so a Vec may own
    // and later free it with capacity `len`; all-zero bytes are a valid T (ZeroBits: 0), so all
    // `len` elements are initialised.
    Some(unsafe { Vec::from_raw_parts(p, len, len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2TiB"), Some(2 << 40));
        assert_eq!(parse_size("64mb"), Some(64 << 20));
        assert_eq!(parse_size("1KIB"), Some(1 << 10));
        assert_eq!(parse_size("12b"), Some(12));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn checks_are_exact_and_overflow_is_over_budget() {
        let b = MemoryBudget::bytes(1000);
        assert_eq!(b.check("x", 250, 4), Ok(1000));
        assert!(b.check("x", 251, 4).is_err());
        let e = b.check("the output", usize::MAX, 4).unwrap_err();
        assert_eq!(e.needed, None);
        assert!(e.to_string().contains("more than 2^64"), "{e}");
        assert!(
            MemoryBudget::UNLIMITED.zeros::<f32>("huge", usize::MAX / 8).is_err(),
            "the allocator refuses, no abort"
        );
        assert_eq!(b.zeros::<f32>("ok", 10).unwrap(), vec![0.0f32; 10]);
        assert!(b.zeros::<i32>("empty", 0).unwrap().is_empty());
        assert!(MemoryBudget::default_for_this_machine().get() > 0);
    }
}
