//! Platforms (`os/arch[/variant]`): parsing, normalising as containerd's `platforms`
//! package does, and choosing the manifest that fits a wanted platform.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An OCI platform, as an index entry's descriptor names it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The rank of a candidate that names no platform: after every match, decided later (by
/// its config), as containerd does.
pub const UNKNOWN_PLATFORM_RANK: u32 = u32::MAX - 1;

/// This host's platform: Rust's `std::env::consts::ARCH` mapped to the OCI architecture
/// (and default variant).
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" => ("mips64le", ""),
        other => (other, ""),
    };
    Platform {
        architecture: architecture.to_string(),
        os: std::env::consts::OS.to_string(),
        variant: variant.to_string(),
    }
}

/// Parses `os[/arch[/variant]]` (`linux/arm64`, `linux/arm/v7`); `arch` alone means linux.
pub fn parse_platform(s: &str) -> Result<Platform, Error> {
    let bad = || Error::InvalidPlatform {
        spec: s.to_string(),
    };
    let parts: Vec<String> = s.trim().split('/').map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return Err(bad());
    }
    let (os, architecture, variant) = match parts.as_slice() {
        [arch] => ("linux".to_string(), arch.clone(), String::new()),
        [os, arch] => (os.clone(), arch.clone(), String::new()),
        [os, arch, variant] => (os.clone(), arch.clone(), variant.clone()),
        _ => return Err(bad()),
    };
    Ok(normalize(Platform {
        architecture,
        os,
        variant,
    }))
}

/// Normalises architecture aliases and default variants the way containerd's `platforms`
/// package does.
pub fn normalize(mut p: Platform) -> Platform {
    p.os = p.os.to_ascii_lowercase();
    let arch = p.architecture.to_ascii_lowercase();
    let variant = p.variant.to_ascii_lowercase();
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386".to_string(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_string(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".to_string(), v)
        }
        "armhf" => ("arm".to_string(), "v7".to_string()),
        "armel" => ("arm".to_string(), "v6".to_string()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_string(), v)
        }
        _ => (arch, variant),
    };
    p.architecture = arch;
    p.variant = variant;
    p
}

/// Whether an image built for `have` runs on the wanted platform, and how well: lower is
/// better (0 = exact). An unspecified wanted variant accepts any variant.
pub fn match_rank(want: &Platform, have: &Platform) -> Option<u32> {
    let have = normalize(have.clone());
    if want.os != have.os || want.architecture != have.architecture {
        return None;
    }
    if want.variant == have.variant {
        return Some(0);
    }
    if want.architecture == "arm" && !want.variant.is_empty() {
        // arm/v7 also runs v6 and v5 images, preferring the newest.
        let n = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        return match (n(&want.variant), n(&have.variant)) {
            (Some(w), Some(h)) if h < w => Some(w - h),
            _ => None,
        };
    }
    if want.variant.is_empty() {
        return Some(1);
    }
    None
}

/// Whether `have` is the wanted platform itself rather than one that merely runs on it
/// (what archive import and export select by): arm/v7 does not take arm/v6 here, though an
/// unspecified wanted variant still accepts any variant.
pub fn matches_strict(want: &Platform, have: &Platform) -> bool {
    match_rank(want, have).is_some_and(|rank| rank == 0 || want.variant.is_empty())
}

/// The candidate that runs best on `want` (the first of equals): candidates without a
/// platform rank [`UNKNOWN_PLATFORM_RANK`], after every match; those whose platform does
/// not run there are out. The one choice pull, push, unpack and the CLI make.
pub fn best_match<'p, T>(
    want: &Platform,
    candidates: impl IntoIterator<Item = (Option<&'p Platform>, T)>,
) -> Option<T> {
    candidates
        .into_iter()
        .filter_map(|(have, item)| {
            let rank = match have {
                Some(have) => match_rank(want, have)?,
                None => UNKNOWN_PLATFORM_RANK,
            };
            Some((rank, item))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, item)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        parse_platform(s).expect("platform")
    }

    fn have(s: &str) -> Platform {
        let mut parts = s.split('/');
        Platform {
            os: parts.next().unwrap_or_default().into(),
            architecture: parts.next().unwrap_or_default().into(),
            variant: parts.next().unwrap_or_default().into(),
        }
    }

    #[test]
    fn platforms_parse_and_normalize() {
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
        assert_eq!(p("linux/aarch64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("amd64").to_string(), "linux/amd64");
        assert_eq!(p("Linux/X86_64").to_string(), "linux/amd64");
        assert!(parse_platform("linux//v7").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
        assert!(parse_platform("").is_err());
        let host = host_platform();
        assert_eq!(host.os, std::env::consts::OS);
        assert!(!host.architecture.is_empty());
    }

    #[test]
    fn platform_matching() {
        assert_eq!(match_rank(&p("linux/amd64"), &have("linux/amd64")), Some(0));
        assert_eq!(match_rank(&p("linux/amd64"), &have("linux/arm64")), None);
        assert_eq!(
            match_rank(&p("linux/arm64"), &have("linux/arm64/v8")),
            Some(0)
        );
        assert_eq!(
            match_rank(&p("linux/arm/v7"), &have("linux/arm/v7")),
            Some(0)
        );
        assert_eq!(
            match_rank(&p("linux/arm/v7"), &have("linux/arm/v6")),
            Some(1)
        );
        assert_eq!(match_rank(&p("linux/arm/v6"), &have("linux/arm/v7")), None);
        assert_eq!(match_rank(&p("linux/amd64"), &have("windows/amd64")), None);
        assert_eq!(
            match_rank(&p("linux/amd64"), &have("linux/amd64/v3")),
            Some(1)
        );
        assert!(matches_strict(&p("linux/arm/v7"), &have("linux/arm/v7")));
        assert!(!matches_strict(&p("linux/arm/v7"), &have("linux/arm/v6")));
        assert!(matches_strict(&p("linux/amd64"), &have("linux/amd64/v3")));
        assert!(!matches_strict(&p("linux/amd64"), &have("linux/arm64")));
        // What an index states is normalised before it is compared.
        assert!(matches_strict(&p("linux/arm64"), &have("linux/aarch64/v8")));
        assert!(matches_strict(&p("linux/arm/v7"), &have("linux/arm")));
        assert!(!matches_strict(&p("linux/arm/v6"), &have("linux/arm/v7")));
    }

    #[test]
    fn best_of_candidates() {
        let (v6, v7, arm64) = (
            have("linux/arm/v6"),
            have("linux/arm/v7"),
            have("linux/arm64"),
        );
        let want = p("linux/arm/v7");
        let pick = |c: Vec<(Option<&Platform>, &'static str)>| best_match(&want, c);
        assert_eq!(
            pick(vec![(Some(&v6), "v6"), (Some(&v7), "v7"), (None, "none")]),
            Some("v7")
        );
        assert_eq!(pick(vec![(None, "none"), (Some(&v6), "v6")]), Some("v6"));
        assert_eq!(
            pick(vec![(Some(&arm64), "arm64"), (None, "none")]),
            Some("none")
        );
        assert_eq!(pick(vec![(Some(&arm64), "arm64")]), None);
        assert_eq!(pick(vec![(None, "a"), (None, "b")]), Some("a"));
    }
}
