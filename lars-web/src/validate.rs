//! Input validation shared by the pages and the JSON API: every message is
//! meant to be shown next to its field.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use lars_core::{HostAddr, ModKey};

/// Errors by field name, in a stable order.
pub(crate) type FieldErrors = BTreeMap<String, String>;

/// Largest description the store keeps (`varchar(1024)`).
pub(crate) const MAX_CONTENT: usize = 1024;

/// A modid or cmdid: a whole number in `1..=4294967295` (the store's
/// `int unsigned` columns; 0 is not a key).
pub(crate) fn id(field: &str, text: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("{field} is required"));
    }
    match t.parse::<u64>() {
        Ok(v) if (1..=u64::from(u32::MAX)).contains(&v) => Ok(v as u32),
        _ => Err(format!(
            "{field} must be a whole number from 1 to {}",
            u32::MAX
        )),
    }
}

/// A dotted-quad IPv4 address a host can be reached at (not `0.0.0.0` or
/// `255.255.255.255`).
pub(crate) fn ip(text: &str) -> Result<Ipv4Addr, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("ip is required".into());
    }
    match t.parse::<Ipv4Addr>() {
        Ok(a) if a.is_unspecified() => Err("ip 0.0.0.0 cannot be routed to".into()),
        Ok(a) if a.is_broadcast() => Err("ip 255.255.255.255 cannot be routed to".into()),
        Ok(a) => Ok(a),
        Err(_) => Err(format!(
            "ip must be a dotted-quad IPv4 address like 10.0.0.1, got {t:?}"
        )),
    }
}

/// A port in `1..=65535`.
pub(crate) fn port(text: &str) -> Result<u16, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("port is required".into());
    }
    match t.parse::<u32>() {
        Ok(v) if (1..=65535).contains(&v) => Ok(v as u16),
        _ => Err(format!(
            "port must be a whole number from 1 to 65535, got {t:?}"
        )),
    }
}

/// A description's text: at most 1024 bytes, no control characters except
/// tab.
pub(crate) fn content(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.len() > MAX_CONTENT {
        return Err(format!(
            "description is {} bytes; at most {MAX_CONTENT} are kept",
            t.len()
        ));
    }
    if t.chars().any(|c| c.is_control() && c != '\t') {
        return Err("description must be one line of text".into());
    }
    Ok(t.to_owned())
}

/// The longest console user name, in bytes.
pub(crate) const MAX_USER_NAME: usize = 190;

/// A console user name: 1..=190 bytes, no control characters, no
/// surrounding blanks.
pub(crate) fn user_name(name: &str) -> Result<&str, String> {
    let n = name.trim();
    if n.is_empty() || n.len() > MAX_USER_NAME {
        return Err("the user name must have 1 to 190 bytes".into());
    }
    if n.chars().any(char::is_control) {
        return Err("the user name must not contain control characters".into());
    }
    Ok(n)
}

/// `(modid, cmdid)` from two fields, collecting errors.
pub(crate) fn key(modid: &str, cmdid: &str, errors: &mut FieldErrors) -> Option<ModKey> {
    let m = id("modid", modid).map_err(|e| errors.insert("modid".into(), e));
    let c = id("cmdid", cmdid).map_err(|e| errors.insert("cmdid".into(), e));
    Some(ModKey::new(m.ok()?, c.ok()?))
}

/// A host from its ip and port fields, collecting errors under `prefix`ip and
/// `prefix`port.
pub(crate) fn host(
    ip_text: &str,
    port_text: &str,
    prefix: &str,
    errors: &mut FieldErrors,
) -> Option<HostAddr> {
    let a = ip(ip_text).map_err(|e| errors.insert(format!("{prefix}ip"), e));
    let p = port(port_text).map_err(|e| errors.insert(format!("{prefix}port"), e));
    Some(HostAddr::new(a.ok()?.to_bits(), p.ok()?))
}

/// A host list, one `a.b.c.d:port` per line (blank lines ignored); errors
/// name the line.
pub(crate) fn host_lines(text: &str) -> Result<Vec<HostAddr>, String> {
    let mut hosts = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match host_text(line) {
            Ok(h) => hosts.push(h),
            Err(e) => problems.push(format!("line {}: {e}", n + 1)),
        }
    }
    if problems.is_empty() {
        Ok(hosts)
    } else {
        Err(problems.join("; "))
    }
}

/// One `a.b.c.d:port`.
pub(crate) fn host_text(text: &str) -> Result<HostAddr, String> {
    let Some((a, p)) = text.trim().rsplit_once(':') else {
        return Err(format!("expected a.b.c.d:port, got {:?}", text.trim()));
    };
    let a = ip(a)?;
    let p = port(p)?;
    Ok(HostAddr::new(a.to_bits(), p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(id("modid", " 7 "), Ok(7));
        assert_eq!(id("modid", "4294967295"), Ok(u32::MAX));
        assert!(id("modid", "0").is_err());
        assert!(id("modid", "4294967296").is_err());
        assert!(id("modid", "-1").is_err());
        assert!(id("modid", "1.5").is_err());
        assert_eq!(id("cmdid", ""), Err("cmdid is required".into()));
    }

    #[test]
    fn ips_and_ports() {
        assert_eq!(ip("10.0.0.1"), Ok(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0",
            "10.0.0.256",
            "010.0.0.1",
            "a.b.c.d",
            "::1",
        ] {
            assert!(ip(bad).is_err(), "{bad}");
        }
        assert_eq!(port("65535"), Ok(65535));
        for bad in ["0", "65536", "-1", "x", ""] {
            assert!(port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_lists_name_the_bad_line() {
        let ok = host_lines("10.0.0.1:80\n\n 10.0.0.2:81 \n").unwrap();
        assert_eq!(ok.len(), 2);
        let err = host_lines("10.0.0.1:80\n10.0.0.2:0\nnope").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn keys_collect_both_errors() {
        let mut e = FieldErrors::new();
        assert!(key("0", "x", &mut e).is_none());
        assert_eq!(e.len(), 2);
        let mut e = FieldErrors::new();
        assert_eq!(key("1", "2", &mut e), Some(ModKey::new(1, 2)));
        assert!(e.is_empty());
    }

    #[test]
    fn contents() {
        assert_eq!(content("  hello "), Ok("hello".into()));
        assert!(content(&"x".repeat(1025)).is_err());
        assert!(content("a\nb").is_err());
    }
}
