//! What a user typed, as the use-cases receive it: the same structs are read
//! from a form or from a JSON body ([`Fields`]), and parse into domain
//! values or a [`ConsoleError::Invalid`] naming every bad field.

use std::collections::HashMap;

use lars_core::{HostAddr, ModKey};
use lars_store::RouteFilter;
use serde_json::Value;

use crate::error::ConsoleError;
use crate::validate::{self, FieldErrors};

/// A source of text fields: a form body or a JSON object.
pub(crate) trait Fields {
    /// The field's text; empty when missing.
    fn text(&self, name: &str) -> String;
}

impl Fields for HashMap<String, String> {
    fn text(&self, name: &str) -> String {
        self.get(name).cloned().unwrap_or_default()
    }
}

impl Fields for Value {
    /// Strings as they are, numbers in decimal (ids and ports may be sent
    /// either way), null or missing as empty, anything else as its JSON text
    /// (which then fails validation).
    fn text(&self, name: &str) -> String {
        match self.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

/// An `ip` and a `port` field.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostInput {
    pub ip: String,
    pub port: String,
}

impl HostInput {
    pub(crate) fn read(f: &impl Fields) -> Self {
        Self {
            ip: f.text("ip"),
            port: f.text("port"),
        }
    }

    /// The host, or errors under `{prefix}ip` and `{prefix}port`.
    fn parse_into(&self, prefix: &str, errors: &mut FieldErrors) -> Option<HostAddr> {
        validate::host(&self.ip, &self.port, prefix, errors)
    }

    pub(crate) fn parse(&self) -> Result<HostAddr, ConsoleError> {
        let mut errors = FieldErrors::new();
        let host = self.parse_into("", &mut errors);
        match host {
            Some(h) if errors.is_empty() => Ok(h),
            _ => Err(ConsoleError::Invalid(errors)),
        }
    }
}

/// A new route: `modid`, `cmdid`, `ip`, `port`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteInput {
    pub modid: String,
    pub cmdid: String,
    pub host: HostInput,
}

impl RouteInput {
    pub(crate) fn read(f: &impl Fields) -> Self {
        Self {
            modid: f.text("modid"),
            cmdid: f.text("cmdid"),
            host: HostInput::read(f),
        }
    }

    /// The key and host, or every bad field.
    pub(crate) fn parse(&self) -> Result<(ModKey, HostAddr), ConsoleError> {
        let mut errors = FieldErrors::new();
        let key = validate::key(&self.modid, &self.cmdid, &mut errors);
        let host = self.host.parse_into("", &mut errors);
        match (key, host) {
            (Some(k), Some(h)) if errors.is_empty() => Ok((k, h)),
            _ => Err(ConsoleError::Invalid(errors)),
        }
    }
}

/// A whole host list: the page's text area (one `a.b.c.d:port` per line,
/// errors under `hosts` naming the line) or the API's `hosts` array (errors
/// under `hosts[i].ip` / `hosts[i].port`).
#[derive(Debug, Clone)]
pub(crate) enum HostList {
    Lines(String),
    Items(Value),
}

impl HostList {
    pub(crate) fn parse(&self) -> Result<Vec<HostAddr>, ConsoleError> {
        match self {
            HostList::Lines(text) => {
                validate::host_lines(text).map_err(|e| ConsoleError::invalid("hosts", e))
            }
            HostList::Items(v) => {
                let Some(items) = v.as_array() else {
                    return Err(ConsoleError::invalid(
                        "hosts",
                        "hosts must be a list of {\"ip\", \"port\"} objects",
                    ));
                };
                let mut errors = FieldErrors::new();
                let hosts: Vec<HostAddr> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        HostInput::read(item).parse_into(&format!("hosts[{i}]."), &mut errors)
                    })
                    .collect();
                ConsoleError::check(errors)?;
                Ok(hosts)
            }
        }
    }
}

/// A description: its code (field `modid` or `cmdid`) and `content`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DescInput {
    pub code: String,
    pub content: String,
}

impl DescInput {
    /// Reads the code from field `code_field` (`modid` or `cmdid`).
    pub(crate) fn read(f: &impl Fields, code_field: &str) -> Self {
        Self {
            code: f.text(code_field),
            content: f.text("content"),
        }
    }

    /// The code and the trimmed content, or every bad field.
    pub(crate) fn parse(&self, code_field: &str) -> Result<(u32, String), ConsoleError> {
        let mut errors = FieldErrors::new();
        let code = validate::id(code_field, &self.code)
            .map_err(|e| errors.insert(code_field.to_owned(), e));
        let content =
            validate::content(&self.content).map_err(|e| errors.insert("content".into(), e));
        match (code, content) {
            (Ok(c), Ok(t)) => Ok((c, t)),
            _ => Err(ConsoleError::Invalid(errors)),
        }
    }
}

/// The optional `?modid=&cmdid=` filters: blank means all; a bad value is
/// reported and ignored.
pub(crate) fn filter(q: &HashMap<String, String>) -> (RouteFilter, FieldErrors) {
    let mut errors = FieldErrors::new();
    let mut one = |name: &str| {
        let t = q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())?;
        validate::id(name, t)
            .map_err(|e| errors.insert(name.to_owned(), e))
            .ok()
    };
    let f = RouteFilter {
        modid: one("modid"),
        cmdid: one("cmdid"),
    };
    (f, errors)
}

/// The `?q=` search text, trimmed; `None` when blank.
pub(crate) fn search(q: &HashMap<String, String>) -> Option<String> {
    q.get("q")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Minutes of call history a key's status covers.
pub(crate) const DEFAULT_MINUTES: i64 = 60;

/// `?minutes=`: `1..=1440`, 60 when absent.
pub(crate) fn minutes(q: &HashMap<String, String>) -> Result<i64, ConsoleError> {
    match q.get("minutes").map(|s| s.trim().parse::<i64>()) {
        None => Ok(DEFAULT_MINUTES),
        Some(Ok(n)) if (1..=1440).contains(&n) => Ok(n),
        Some(_) => Err(ConsoleError::invalid(
            "minutes",
            "minutes must be a whole number from 1 to 1440",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_fields_accept_numbers_and_strings() {
        let v = json!({"modid": 7, "cmdid": "3", "ip": "10.0.0.1", "port": 80, "x": null});
        let r = RouteInput::read(&v);
        assert_eq!(
            r.parse().ok(),
            Some((ModKey::new(7, 3), HostAddr::new(0x0a00_0001, 80)))
        );
        assert_eq!(v.text("x"), "");
        assert_eq!(v.text("missing"), "");
    }

    #[test]
    fn every_bad_field_is_named() {
        let v = json!({"modid": 0, "cmdid": "x", "ip": "10.0.0", "port": 70000});
        let Err(ConsoleError::Invalid(f)) = RouteInput::read(&v).parse() else {
            panic!("invalid input accepted");
        };
        assert_eq!(
            f.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cmdid", "ip", "modid", "port"]
        );
        let list = HostList::Items(json!([{"ip": "10.0.0.1", "port": 1}, {"ip": "x", "port": 0}]));
        let Err(ConsoleError::Invalid(f)) = list.parse() else {
            panic!("invalid list accepted");
        };
        assert!(f.contains_key("hosts[1].ip") && f.contains_key("hosts[1].port"));
        assert!(HostList::Items(json!("x")).parse().is_err());
    }

    #[test]
    fn filters_and_minutes() {
        let q: HashMap<String, String> =
            [("modid".into(), "5".into()), ("cmdid".into(), " ".into())]
                .into_iter()
                .collect();
        let (f, e) = filter(&q);
        assert_eq!((f.modid, f.cmdid, e.len()), (Some(5), None, 0));
        let q: HashMap<String, String> = [("modid".into(), "0".into())].into_iter().collect();
        assert_eq!(filter(&q).1.len(), 1);
        assert_eq!(minutes(&HashMap::new()).ok(), Some(60));
        let q: HashMap<String, String> = [("minutes".into(), "1441".into())].into_iter().collect();
        assert!(minutes(&q).is_err());
    }
}
