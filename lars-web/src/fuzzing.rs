//! The entry point of the `web_input` fuzz target (`fuzz/`): the console's
//! form and JSON parsing and validators are private, so this one function
//! runs them all on arbitrary bytes. Not part of the API.

use serde_json::Value;

use crate::error::ConsoleError;
use crate::extract::form_fields;
use crate::input::{self, DescInput, HostInput, HostList, RouteInput};
use crate::validate;

/// Runs `data` through every input parser of the console: as a urlencoded
/// form body, as a JSON body and as the raw text of a field. Panics only when
/// a parser panics or accepts a value outside its documented range (the
/// fuzz target's invariant).
pub fn web_input(data: &[u8]) {
    let form = form_fields(data);
    check_fields(&form);
    let _ = input::filter(&form);
    let _ = input::search(&form);
    if let Ok(m) = input::minutes(&form) {
        assert!((1..=1440).contains(&m), "minutes {m} accepted");
    }
    let _ = HostList::Lines(form.get("hosts").cloned().unwrap_or_default()).parse();

    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        check_fields(&v);
        let items = v.get("hosts").cloned().unwrap_or(Value::Null);
        if let Ok(hosts) = HostList::Items(items).parse() {
            assert!(hosts.iter().all(|h| h.port != 0 && h.ip != 0));
        }
    }

    let text = String::from_utf8_lossy(data);
    if let Ok(hosts) = validate::host_lines(&text) {
        assert!(
            hosts
                .iter()
                .all(|h| h.port != 0 && h.ip != 0 && h.ip != u32::MAX)
        );
    }
    if let Ok(c) = validate::content(&text) {
        assert!(c.len() <= validate::MAX_CONTENT);
    }
    if let Ok(n) = validate::user_name(&text) {
        assert!(!n.is_empty() && n.len() <= 190);
    }
    if let Ok(id) = validate::id("modid", &text) {
        assert!(id >= 1);
    }
}

fn check_fields(f: &impl input::Fields) {
    if let Ok((key, host)) = RouteInput::read(f).parse() {
        assert!(key.modid >= 1 && key.cmdid >= 1 && host.port >= 1);
    }
    let _ = HostInput::read(f).parse();
    match DescInput::read(f, "modid").parse("modid") {
        Ok((code, content)) => assert!(code >= 1 && content.len() <= validate::MAX_CONTENT),
        Err(ConsoleError::Invalid(errors)) => assert!(!errors.is_empty()),
        Err(other) => panic!("description parse: unexpected {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn runs_on_forms_json_and_text() {
        web_input(b"modid=1&cmdid=2&ip=10.0.0.1&port=80&hosts=10.0.0.1%3A80&minutes=5");
        web_input(br#"{"modid":1,"cmdid":"2","hosts":[{"ip":"10.0.0.1","port":80}]}"#);
        web_input(b"10.0.0.1:80\n\n10.0.0.2:81");
        web_input(&[0xff, 0xfe, b'=', b'%']);
        let empty: HashMap<String, String> = HashMap::new();
        check_fields(&empty);
    }
}
