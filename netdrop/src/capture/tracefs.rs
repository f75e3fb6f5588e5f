//! The `skb:kfree_skb` record layout from the tracefs format file, for the
//! plain-tracepoint fallback (its field offsets moved between kernels).

use std::path::{Path, PathBuf};

use netdrop_common::TracepointLayout;

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")]
    NotMounted,
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}: no field `{field}` in the tracepoint format")]
    NoField { path: PathBuf, field: &'static str },
}

pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_path_buf)
        .ok_or(TracefsError::NotMounted)
}

pub fn kfree_skb_layout() -> Result<TracepointLayout, TracefsError> {
    let path = tracefs_root()?.join("events/skb/kfree_skb/format");
    let text = std::fs::read_to_string(&path).map_err(|e| TracefsError::Read(path.clone(), e))?;
    parse_kfree_skb_format(&text, &path)
}

fn parse_kfree_skb_format(text: &str, path: &Path) -> Result<TracepointLayout, TracefsError> {
    let find = |field: &'static str| {
        field_offset(text, field).ok_or_else(|| TracefsError::NoField {
            path: path.to_path_buf(),
            field,
        })
    };
    Ok(TracepointLayout {
        skbaddr: find("skbaddr")?,
        location: find("location")?,
        reason: find("reason")?,
        _pad: 0,
    })
}

/// Offset of `field` in lines like `field:void * skbaddr; offset:8; size:8;`.
fn field_offset(text: &str, field: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        let off = rest.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n";
    const OLD: &str = "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n";

    #[test]
    fn reads_reason_offset_of_both_kernel_generations() {
        let p = Path::new("format");
        assert_eq!(parse_kfree_skb_format(NEW, p).unwrap().reason, 36);
        let old = parse_kfree_skb_format(OLD, p).unwrap();
        assert_eq!((old.skbaddr, old.location, old.reason), (8, 16, 28));
    }

    #[test]
    fn missing_field_is_named() {
        let err =
            parse_kfree_skb_format("field:void * skbaddr; offset:8;", Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("location"));
    }
}
