//! Kernel function addresses from `/proc/kallsyms` (root sees real ones).

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read /proc/kallsyms: {0}")]
    Read(#[from] std::io::Error),
    #[error(
        "/proc/kallsyms shows zero addresses (kptr_restrict): netdrop needs CAP_SYSLOG (or root) to find the kernel functions that tell a drop's netfilter hook"
    )]
    Hidden,
}

/// A sorted symbol table: exact lookups by name, and address → nearest symbol.
#[derive(Debug, Default)]
pub struct Kallsyms {
    by_name: HashMap<String, u64>,
    /// (address, name), sorted by address, text symbols only.
    sorted: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self, KallsymsError> {
        Self::parse(&std::fs::read_to_string("/proc/kallsyms")?)
    }

    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        let mut by_name = HashMap::new();
        let mut sorted = Vec::new();
        let mut nonzero = false;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            nonzero |= addr != 0;
            if !matches!(kind, "t" | "T") {
                continue;
            }
            // Module symbols come with "[module]" after the name; keep the name.
            by_name.entry(name.to_owned()).or_insert(addr);
            sorted.push((addr, name.to_owned()));
        }
        if !nonzero && !text.is_empty() {
            return Err(KallsymsError::Hidden);
        }
        sorted.sort_unstable();
        Ok(Self { by_name, sorted })
    }

    pub fn addr(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// `function+0xoff` for a code address, like the kernel's `%pS`.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.sorted.partition_point(|(a, _)| *a <= addr);
        let (base, name) = self.sorted.get(i.checked_sub(1)?)?;
        Some(format!("{name}+0x{:x}", addr - base))
    }

    /// Code ranges `[start, next symbol)` of the functions whose name, less
    /// any compiler suffix (`.part.0`, `.constprop.0`, `.cold`), is `name`.
    pub fn function_ranges(&self, name: &str) -> Vec<(u64, u64)> {
        let is_name = |n: &str| n.split('.').next() == Some(name);
        self.sorted
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| is_name(n))
            .filter_map(|(i, (lo, _))| {
                let hi = self.sorted[i + 1..]
                    .iter()
                    .map(|(a, _)| *a)
                    .find(|a| a > lo)?;
                Some((*lo, hi))
            })
            .collect()
    }

    /// The bare function name of a code address.
    pub fn function(&self, addr: u64) -> Option<&str> {
        let i = self.sorted.partition_point(|(a, _)| *a <= addr);
        self.sorted.get(i.checked_sub(1)?).map(|(_, n)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_to_nearest_lower_text_symbol() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _text\nffffffff81000100 t nf_hook_slow\nffffffff81000200 D some_data\nffffffff81000300 T ip_forward\n",
        )
        .unwrap();
        assert_eq!(k.addr("ip_forward"), Some(0xffffffff81000300));
        assert_eq!(
            k.symbolize(0xffffffff81000142).as_deref(),
            Some("nf_hook_slow+0x42")
        );
        assert_eq!(k.function(0xffffffff81000300), Some("ip_forward"));
        assert_eq!(k.addr("some_data"), None);
    }

    #[test]
    fn function_ranges_take_compiler_split_parts() {
        let k = Kallsyms::parse(
            "ffffffff81000000 t br_nf_forward_finish\nffffffff81000100 t __pfx_br_nf_forward_ip.part.0\nffffffff81000110 t br_nf_forward_ip.part.0\nffffffff81000400 t __pfx_br_nf_forward\nffffffff81000410 t br_nf_forward\nffffffff81000500 t ip_forward\n",
        )
        .unwrap();
        assert_eq!(
            k.function_ranges("br_nf_forward_ip"),
            vec![(0xffffffff81000110, 0xffffffff81000400)]
        );
        assert_eq!(
            k.function_ranges("br_nf_forward"),
            vec![(0xffffffff81000410, 0xffffffff81000500)]
        );
        // The last symbol has no end: no range rather than a guess.
        assert_eq!(k.function_ranges("ip_forward"), vec![]);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        assert!(matches!(
            Kallsyms::parse("0000000000000000 T _text\n"),
            Err(KallsymsError::Hidden)
        ));
    }
}
