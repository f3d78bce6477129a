//! Cache sizes of this CPU, read once from Linux sysfs (defaults elsewhere).

use std::sync::OnceLock;

use sparkle_core::gemm::blocking::CacheSizes;

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.strip_suffix('K') {
        Some(n) => (n, 1 << 10),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1 << 20),
            None => (s, 1),
        },
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

fn read() -> CacheSizes {
    let mut sizes = CacheSizes::DEFAULT;
    for idx in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{idx}");
        let get = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(kind), Some(size)) = (get("level"), get("type"), get("size")) else { continue };
        let Some(size) = parse_size(&size) else { continue };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => sizes.l1d = size,
            ("2", _) => sizes.l2 = size,
            ("3", _) => sizes.l3 = size,
            _ => {}
        }
    }
    sizes
}

/// This machine's cache sizes (sysfs on Linux, [`CacheSizes::DEFAULT`] where unknown).
pub fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(read)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("48K\n"), Some(48 << 10));
        assert_eq!(super::parse_size("2M"), Some(2 << 20));
        assert_eq!(super::parse_size("bogus"), None);
    }
}
