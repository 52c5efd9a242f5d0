//! Certificates generated in the test (filled in by the TLS work of issue 16).
