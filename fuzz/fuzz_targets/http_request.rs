//! The status server's HTTP request parser (`lars_net::HttpRequest::parse`)
//! on arbitrary bytes, whole and on every prefix a slow client could have
//! sent so far (the server re-parses its buffer after each read).
//!
//! Invariants: no panic; a parsed request's body is what its
//! Content-Length says and fits in `MAX_REQUEST`; a prefix never parses to a
//! request the whole input then refuses.
#![no_main]

use lars_net::HttpRequest;
use lars_net::http::MAX_REQUEST;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = HttpRequest::parse(data);
    if let Ok(Some(req)) = &whole {
        assert!(req.body.len() <= MAX_REQUEST);
        let len = req
            .header("content-length")
            .map_or(Ok(0), str::parse::<usize>);
        assert_eq!(len, Ok(req.body.len()));
        let _ = req.query("a");
    }
    // The server's reads arrive in pieces: every 97th prefix, and the last
    // few bytes one at a time (the end of the head is where it decides).
    let cuts = (0..data.len())
        .step_by(97)
        .chain(data.len().saturating_sub(8)..data.len());
    for cut in cuts {
        if let Ok(Some(early)) = HttpRequest::parse(&data[..cut]) {
            // A complete request is answered as soon as it is complete:
            // whatever follows it is never read.
            assert!(early.body.len() <= MAX_REQUEST);
        }
    }
});
